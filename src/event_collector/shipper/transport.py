"""Where the shipper's HTTP leaves the process: a transport sends one request to one URL and returns its status
and raw body, raising its library's errors (aiohttp's, OSError, TimeoutError) as they come.

Everything above it runs the same in production and in tests: `OpenSearchClient` (client.py) picks the node,
adds credentials, fails over and translates those errors into OpenSearchUnavailable at that one boundary;
the template guard and the shipper decide what answers mean. A test hands the client a transport of its
own, a function from a request to an answer in the manner of httpx's MockTransport (tests/unit/shipper),
and drives the real shipper without a network or a pending store.
"""

from __future__ import annotations

import ssl
from typing import Protocol

import aiohttp


class Transport(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        """The answer's status and raw body; raises when no answer came (refused, reset, TLS, time-out)."""


class AiohttpTransport:
    """One pooled aiohttp session to every node of the cluster."""

    def __init__(self, timeout_seconds: float, max_connections: int, ssl_context: ssl.SSLContext | None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl_context or True)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        assert self._session is not None, "transport is not open"
        async with self._session.request(method, url, data=body, headers=headers) as response:
            return response.status, await response.read()
