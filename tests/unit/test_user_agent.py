import pytest

from event_collector.enrich.user_agent import UserAgentInfo, UserAgentParser


@pytest.fixture(scope="module")
def parser():
    return UserAgentParser(cache_entries=16)


def test_browser_os_and_device_are_found(parser):
    chrome = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0.6099.144 Mobile Safari/537.36")
    assert parser.parse(chrome) == UserAgentInfo("Chrome Mobile", "120.0.6099", "Android", "14", "Pixel 8", "Google",
                                                 "Pixel 8")


@pytest.mark.parametrize("user_agent", ["ExampleApp/2.4.1", "\x00\uffff", "x" * 1024])
def test_what_matches_no_rule_is_other(parser, user_agent):
    info = parser.parse(user_agent)
    assert info.os_family == "Other" and info.device_family == "Other"


def test_many_distinct_user_agents_stay_within_the_cache_bound(parser):
    for number in range(200):
        parser.parse(f"Bot{number}/1.0")
    # The library's S3-FIFO cache: its entries live in two queues (the index also holds the keys of
    # recently evicted ones, bounded as well).
    cache = parser._parser.resolver.cache
    assert len(cache.small) + len(cache.main) <= 16
    assert len(cache.index) <= 2 * 16 + 1
