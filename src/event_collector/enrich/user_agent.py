"""The User-Agent header parsed into browser, OS and device, with ua-parser and its bundled rules.

Apps send few distinct user agents, so results are cached (the library's S3-FIFO cache, bounded by entries;
each entry is at most a 1,024-character header). A user agent not in the cache costs ~55 µs with the
native matcher (ua-parser-rs); loading the rules costs ~1.3 s and ~32 MB once per worker process, at start.
"""

from __future__ import annotations

import functools

import msgspec
from ua_parser import Cache, CachingResolver, Domain, Parser, RegexResolver, load_builtins

CACHE_ENTRIES = 10_000


@functools.cache
def shared_resolver() -> RegexResolver:
    """The bundled rules, loaded once per process and shared by the enricher and the bot check (rules/bots.py),
    so that both together cost one load, not two."""
    # RegexResolver is the native matcher; ua-parser-rs is a pinned dependency, so it is always there.
    assert RegexResolver is not None, "ua-parser-rs is missing"
    return RegexResolver(load_builtins())


class UserAgentInfo(msgspec.Struct, gc=False):
    browser_family: str
    browser_version: str | None
    os_family: str
    os_version: str | None
    device_family: str
    device_brand: str | None
    device_model: str | None


class UserAgentParser:
    def __init__(self, cache_entries: int = CACHE_ENTRIES) -> None:
        self._parser = Parser(CachingResolver(shared_resolver(), Cache(cache_entries)))

    def parse(self, user_agent: str) -> UserAgentInfo:
        # What matches no rule is the family "Other", as in the rules' own test data.
        result = self._parser(user_agent, Domain.ALL).complete().with_defaults()
        browser, system, device = result.user_agent, result.os, result.device
        return UserAgentInfo(browser.family, _version(browser.major, browser.minor, browser.patch), system.family,
                             _version(system.major, system.minor, system.patch), device.family, device.brand,
                             device.model)


def _version(*parts: str | None) -> str | None:
    present = []
    for part in parts:
        if part is None:
            break
        present.append(part)
    return ".".join(present) or None
