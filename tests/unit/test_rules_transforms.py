"""The transforms of a tracking plan (rules/transforms.py, pii.py, bots.py): every action, every refusal of a bad
value with its place in the file, hashing and sampling stable across processes, and inputs never changed."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import uuid

import pytest

from event_collector.enrich.user_agent import UserAgentParser, shared_resolver
from event_collector.rules.bots import MAX_USER_AGENT_CHARS, BotDetector, bot_detector
from event_collector.rules.errors import RulesError
from event_collector.rules.transforms import SourceTransforms

KEY = b"test-hash-key"


def compiled(config: dict, key: bytes | None = KEY, source: str = "events") -> SourceTransforms:
    return SourceTransforms.compile(source, config, key)


# --- refusals: each names the place in the file ---

@pytest.mark.parametrize("config, key, message", [
    ({"pii": {"email": "crypt"}}, KEY, 'sources.events.pii.email: unknown action "crypt" (hash, mask, drop)'),
    ({"pii": {"email": None}}, KEY, "sources.events.pii.email: unknown action null (hash, mask, drop)"),
    ({"pii": {"email": "hash"}}, None, "sources.events.pii.email: hash needs the setting RULES_HASH_KEY"),
    ({"pii": {"email": "hash"}}, b"", "sources.events.pii.email: hash needs the setting RULES_HASH_KEY"),
    ({"pii": {"": "drop"}}, KEY, "sources.events.pii.: a path is a non-empty string"),
    ({"pii": {"  ": "drop"}}, KEY, "sources.events.pii.  : a path is a non-empty string"),
    ({"pii": {"a..b": "drop"}}, KEY, "sources.events.pii.a..b: empty segment in path 'a..b'"),
    ({"pii": {".a": "drop"}}, KEY, "sources.events.pii..a: empty segment in path '.a'"),
    ({"pii": {"a.": "mask"}}, KEY, "sources.events.pii.a.: empty segment in path 'a.'"),
    ({"pii": {3: "mask"}}, KEY, "sources.events.pii.3: a path is a non-empty string"),
    ({"pii": ["email"]}, KEY, "sources.events.pii: expected a mapping of path to action, got list"),
    ({"bots": "block"}, KEY, 'sources.events.bots: unknown value "block" (off, flag, drop)'),
    ({"bots": True}, KEY, "sources.events.bots: unknown value True (off, flag, drop)"),
    ({"events": {"buy": {"sample": 1.5}}}, KEY, "sources.events.events.buy.sample: 1.5 is outside 0..1"),
    ({"events": {"buy": {"sample": -0.1}}}, KEY, "sources.events.events.buy.sample: -0.1 is outside 0..1"),
    ({"events": {"buy": {"sample": math.nan}}}, KEY, "sources.events.events.buy.sample: nan is outside 0..1"),
    ({"events": {"buy": {"sample": "50%"}}}, KEY,
     'sources.events.events.buy.sample: expected a number from 0 to 1 (the fraction kept), got "50%"'),
    ({"events": {"buy": {"sample": True}}}, KEY,
     "sources.events.events.buy.sample: expected a number from 0 to 1 (the fraction kept), got True"),
    ({"events": {"buy": {"sample": None}}}, KEY,
     "sources.events.events.buy.sample: expected a number from 0 to 1 (the fraction kept), got null"),
    ({"events": {"buy": {"drop": "yes"}}}, KEY, 'sources.events.events.buy.drop: expected true or false, got "yes"'),
    ({"events": {"buy": {"drop": 1}}}, KEY, "sources.events.events.buy.drop: expected true or false, got 1"),
    ({"events": {"buy": 0.5}}, KEY, "sources.events.events.buy: expected a mapping, got float"),
    ({"events": {"": {"drop": True}}}, KEY, "sources.events.events.: an event name is a non-empty string"),
    ({"events": ["buy"]}, KEY, "sources.events.events: expected a mapping, got list"),
])
def test_a_bad_value_is_refused_with_its_place_in_the_file(config, key, message):
    with pytest.raises(RulesError) as refused:
        compiled(config, key)
    assert str(refused.value).startswith(message)


def test_the_source_is_named_in_the_message():
    with pytest.raises(RulesError, match=r"^sources\.shop-web\.pii\.phone: unknown action"):
        compiled({"pii": {"phone": "blur"}}, source="shop-web")
    with pytest.raises(RulesError, match=r"^sources\.shop-web: expected a mapping, got null"):
        SourceTransforms.compile("shop-web", None, KEY)  # type: ignore[arg-type]


def test_a_section_without_transforms_changes_nothing():
    transforms = compiled({"unplanned": "tag", "events": {"buy": None, "view": {"policy": "tag"}}}, key=None)
    properties = {"email": "a@example.com"}
    assert transforms.bots == "off"
    assert not transforms.dropped_by_name("buy") and not transforms.dropped_by_name(None)
    assert not transforms.is_bot("curl/8.5.0")
    assert not transforms.sampled_out("buy", "log-1")
    assert transforms.scrub(properties) is properties
    assert transforms.scrub(None) is None


# --- drop by name ---

def test_drop_true_drops_that_name_only():
    transforms = compiled({"events": {"debug": {"drop": True}, "buy": {"drop": False}}})
    assert transforms.dropped_by_name("debug")
    assert not transforms.dropped_by_name("buy")
    assert not transforms.dropped_by_name("Debug")
    assert not transforms.dropped_by_name(None)


# --- bots ---

def test_a_bare_off_read_by_yaml_as_false_is_off():
    assert compiled({"bots": False}).bots == "off"
    assert compiled({"bots": "drop"}).bots == "drop"


@pytest.mark.parametrize("user_agent", [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; GPTBot/1.0; +https://openai.com/gptbot)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Scrapy/2.11.0 (+https://scrapy.org)",
    "Python-urllib/3.11",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
    "curl/8.5.0", "Wget/1.21.4", "python-requests/2.31.0", "python-httpx/0.28.1", "Python/3.11 aiohttp/3.9.1",
    "Go-http-client/1.1", "Go-http-client/2.0", "Apache-HttpClient/4.5.13 (Java/11.0.20)", "node-fetch/1.0",
    "axios/1.6.0", "undici", "GuzzleHttp/7", "libwww-perl/6.72", "HTTPie/3.2.2", "PostmanRuntime/7.36.0",
    "CURL/7.0",
])
def test_crawlers_headless_browsers_and_http_libraries_are_bots(user_agent):
    assert compiled({"bots": "flag"}).is_bot(user_agent)


@pytest.mark.parametrize("user_agent", [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
    # The default agents of mobile apps' HTTP stacks: real users' events come through them.
    "okhttp/4.12.0", "MyShop/3.2 CFNetwork/1485 Darwin/23.1.0", "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8)",
    "Dart/3.2 (dart:io)",
    None, "",
])
def test_browsers_apps_and_a_missing_user_agent_are_not_bots(user_agent):
    assert not compiled({"bots": "drop"}).is_bot(user_agent)


def test_bots_off_never_calls_anything_a_bot():
    assert not compiled({"bots": "off"}).is_bot("curl/8.5.0")


def test_the_verdict_cache_is_bounded_and_reads_a_bounded_header():
    detector = BotDetector(cache_entries=4)
    for n in range(50):
        assert not detector.is_bot(f"Mozilla/5.0 (Windows NT 10.0) Firefox/{n}.0")
    assert detector._cached.cache_info().currsize == 4
    # The marker past the bound is not read; the one inside it is.
    filler = "Mozilla/5.0 " + "x" * MAX_USER_AGENT_CHARS
    assert not detector.is_bot(filler + " curl/8.5.0")
    assert detector.is_bot("curl/8.5.0 " + filler)


def test_one_detector_per_process_on_the_enrichers_ua_parser_rules():
    assert compiled({"bots": "flag"})._bots is compiled({"bots": "drop"}, source="web")._bots is bot_detector()
    assert bot_detector()._resolver is shared_resolver()
    assert UserAgentParser(cache_entries=4)._parser.resolver.parser is shared_resolver()


# --- sampling ---

def log_ids(count: int) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"log-{n}")) for n in range(count)]


def test_sampling_is_a_function_of_the_log_id():
    transforms = compiled({"events": {"view": {"sample": 0.3}}})
    ids = log_ids(2_000)
    first = [transforms.sampled_out("view", log_id) for log_id in ids]
    assert first == [transforms.sampled_out("view", log_id) for log_id in ids]
    assert first == [compiled({"events": {"view": {"sample": 0.3}}}).sampled_out("view", log_id) for log_id in ids]
    assert any(first) and not all(first)


def test_sampling_is_pinned_to_blake2b_of_the_log_id():
    """The decision a resend gets after a restart or an upgrade: changing the hash would change it."""
    transforms = compiled({"events": {"view": {"sample": 0.5}}})
    for log_id in log_ids(200):
        point = int.from_bytes(hashlib.blake2b(log_id.encode(), digest_size=8).digest(), "big") / 2**64
        assert transforms.sampled_out("view", log_id) == (point >= 0.5)


def test_sampling_keeps_the_fraction_over_100k_ids():
    """Over n ids, the count kept is Binomial(n, p) for an ideal hash: 6 standard deviations bound it (a random
    set of ids would miss it once in 5e8 runs; these ids are fixed, so the test cannot flake either way)."""
    count = 100_000
    ids = log_ids(count)
    for sample in (0.01, 0.25, 0.5, 0.9):
        transforms = compiled({"events": {"view": {"sample": sample}}})
        kept = sum(not transforms.sampled_out("view", log_id) for log_id in ids)
        bound = 6 * math.sqrt(count * sample * (1 - sample))
        assert abs(kept - count * sample) <= bound, (sample, kept)


def test_sample_zero_drops_all_one_keeps_all_and_other_events_are_kept():
    transforms = compiled({"events": {"never": {"sample": 0}, "always": {"sample": 1}, "int": {"sample": 1}}})
    ids = log_ids(1_000)
    assert all(transforms.sampled_out("never", log_id) for log_id in ids)
    assert not any(transforms.sampled_out(name, log_id) for log_id in ids for name in ("always", "int", "other", None))


# --- across processes: hashes and sampling decisions with another hash seed ---

CHILD = """
import json, sys
from event_collector.rules.transforms import SourceTransforms
t = SourceTransforms.compile("events", {"pii": {"email": "hash"}, "events": {"v": {"sample": 0.5}}}, b"test-hash-key")
ids = json.loads(sys.argv[1])
print(json.dumps([[t.sampled_out("v", i), t.scrub({"email": i})["email"]] for i in ids]))
"""


def test_hashes_and_samples_are_the_same_in_another_process():
    ids = log_ids(300)
    here = compiled({"pii": {"email": "hash"}, "events": {"v": {"sample": 0.5}}})
    expected = [[here.sampled_out("v", i), here.scrub({"email": i})["email"]] for i in ids]
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(ids)], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert json.loads(child.stdout) == expected
