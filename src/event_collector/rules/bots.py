"""Is a User-Agent a bot? ua-parser's device family "Spider" (crawlers, link previews, feed readers: uap-core's
own list, updated with the pinned ua-parser-builtins), plus the markers below, which uap-core does not class
as spiders: headless browsers and the default agents of HTTP libraries and command-line clients.

The markers (each matched case-insensitively anywhere in the header) were taken from the agents these tools
send by default, as checked against ua-parser-builtins 202610 (docs/rules.md lists them, with those left out
on purpose). Left out: okhttp, CFNetwork, Dalvik and Dart's dart:io, the default agents of Android, iOS and
Flutter apps, which send real users' events through them.

One detector per process, shared by every source and every reading of RULES_FILE, so a reload keeps its
cache. A verdict is cached per header (bounded LRU); a header not yet seen costs one ua-parser match
(5-200 µs, device rules only). Only the first MAX_USER_AGENT_CHARS characters are read and kept, so a
hostile header can neither grow the cache past ~CACHE_ENTRIES × 1 KB nor slow the match.
"""

from __future__ import annotations

import functools
import re

from ua_parser import Domain

from ..enrich.user_agent import shared_resolver

CACHE_ENTRIES = 10_000
# As long as the collector keeps a copied header (envelope.py's _MAX_COPIED_CHARS).
MAX_USER_AGENT_CHARS = 1024
SPIDER_FAMILY = "Spider"

HEADLESS_AND_LIBRARY_MARKERS = (
    # Headless and scripted browsers (Puppeteer's and Playwright's Chromium send HeadlessChrome).
    "HeadlessChrome", "PhantomJS/", "Chrome-Lighthouse", "Cypress/",
    # Command-line clients and API tools.
    "curl/", "Wget/", "HTTPie/", "PostmanRuntime/", "insomnia/",
    # HTTP libraries' default agents.
    "python-requests/", "python-httpx/", "aiohttp/", "Go-http-client/", "Apache-HttpClient/", "node-fetch/",
    "axios/", "undici", "GuzzleHttp/", "libwww-perl/",
)
_MARKERS = re.compile("|".join(map(re.escape, HEADLESS_AND_LIBRARY_MARKERS)), re.IGNORECASE)


class BotDetector:
    def __init__(self, cache_entries: int = CACHE_ENTRIES) -> None:
        self._resolver = shared_resolver()
        self._cached = functools.lru_cache(maxsize=cache_entries)(self._judge)

    def is_bot(self, user_agent: str | None) -> bool:
        """A missing or empty User-Agent is not a bot: many real clients (beacons behind privacy tools, server
        SDKs) send none, and flagging them would drop real users' events under `bots: drop`."""
        if not user_agent:
            return False
        return self._cached(user_agent[:MAX_USER_AGENT_CHARS])

    def _judge(self, user_agent: str) -> bool:
        if _MARKERS.search(user_agent):
            return True
        device = self._resolver(user_agent, Domain.DEVICE).device
        return device is not None and device.family == SPIDER_FAMILY


@functools.cache
def bot_detector() -> BotDetector:
    return BotDetector()
