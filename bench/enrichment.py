"""What enrichment costs per event, in-process: decoding, enriching and encoding one event, with each part of
the enrichment off and on. `make bench` records these figures (bench/run.py); alone:

    .venv/bin/python bench/enrichment.py

Per event means per request of one event, the dearest case: a batch's events share one enrichment.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from event_collector.api.validation import decode_event  # noqa: E402
from event_collector.enrich import Enricher  # noqa: E402
from event_collector.envelope import build_envelope  # noqa: E402
from event_collector.settings import Settings  # noqa: E402

EVENTS = 5_000
REPEATS = 5
USER_AGENT = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
              "Version/17.1 Mobile/15E148 Safari/604.1")
UNTIMED = b'{"log_id":"bench-0001","page":"/home","event":"click","label":"buy","param":{"price":"1200"}}'
TIMED = (b'{"log_id":"bench-0001","page":"/home","event":"click","label":"buy","param":{"price":"1200"},'
         b'"timestamp":"2026-11-28T18:15:02.123+09:00","sent_at":1795856102123}')


def places_file(directory: Path) -> str:
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City")
    writer.insert_network(IPSet(["198.51.100.0/24"]), {
        "country": {"iso_code": "KR", "names": {"en": "South Korea"}},
        "subdivisions": [{"iso_code": "11", "names": {"en": "Seoul"}}], "city": {"names": {"en": "Seoul"}}})
    path = directory / "city.mmdb"
    writer.to_db_file(str(path))
    return str(path)


def per_event_microseconds(enricher: Enricher, body: bytes, user_agents: list[str]) -> float:
    """The CPU time to decode, enrich and encode one event, in µs (over EVENTS events). CPU time, not wall
    time: on a shared machine the time spent waiting for a core is not the enrichment's."""
    scope: dict[str, Any] = {"client": ("127.0.0.2", 50000), "headers": [(b"x-forwarded-for", b"198.51.100.7")]}
    headers: dict[str, str | None] = {"device-uuid": "3f2c8a9e", "app-version": "2.4.1", "os-version": "iOS 17.1"}
    started = time.thread_time()
    for number in range(EVENTS):
        user_agent = user_agents[number % len(user_agents)]
        headers["user-agent"] = user_agent
        client = enricher.client(scope, user_agent)
        build_envelope("bench", decode_event(body), "bench-user", headers, time.time(), client, 7 * 86400)
    return (time.thread_time() - started) / EVENTS * 1e6


def measure() -> dict[str, float]:
    """Each configuration REPEATS times, interleaved so that a noisy moment spreads over all; the medians."""
    with tempfile.TemporaryDirectory() as directory:
        base = Settings(jwt_secret="bench")
        geoip = places_file(Path(directory))
        replace = msgspec.structs.replace
        off, user_agent_on = Enricher(base), Enricher(replace(base, enrich_user_agent=True))
        configurations = {
            "off_us": (off, UNTIMED, [USER_AGENT]),
            "client_times_us": (off, TIMED, [USER_AGENT]),
            "proxy_and_mask_us": (Enricher(replace(base, trusted_proxies="127.0.0.0/8", ip_anonymize="mask")),
                                  UNTIMED, [USER_AGENT]),
            "geoip_us": (Enricher(replace(base, geoip_database=geoip)), UNTIMED, [USER_AGENT]),
            "user_agent_cached_us": (user_agent_on, UNTIMED, [USER_AGENT]),
            "all_on_us": (Enricher(replace(base, trusted_proxies="127.0.0.0/8", ip_anonymize="mask",
                                           geoip_database=geoip, enrich_user_agent=True)), TIMED, [USER_AGENT]),
        }
        samples: dict[str, list[float]] = {name: [] for name in [*configurations, "user_agent_uncached_us"]}
        for repeat in range(REPEATS):
            for name, configuration in configurations.items():
                samples[name].append(per_event_microseconds(*configuration))
            # Every user agent new: the worst case, a client sending a different one with each request.
            distinct = [f"{USER_AGENT} build/{repeat}.{number}" for number in range(EVENTS)]
            samples["user_agent_uncached_us"].append(per_event_microseconds(user_agent_on, UNTIMED, distinct))
        return {name: statistics.median(values) for name, values in samples.items()}

if __name__ == "__main__":
    figures = measure()
    for name, value in figures.items():
        extra = "" if name == "off_us" else f"  (+{value - figures['off_us']:.1f} µs over off)"
        print(f"{name:24} {value:8.1f} µs per event{extra}")
