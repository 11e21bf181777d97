"""The few OpenSearch calls the collector makes, over one pooled aiohttp session.

aiohttp's errors are translated here: callers see OpenSearchUnavailable when OpenSearch could not be
reached or did not answer in time, and (status, parsed body) otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec

from ..exceptions import OpenSearchUnavailable

_decode = msgspec.json.decode
_BULK_PATH = "/_bulk?filter_path=errors,error,status,items.*.status,items.*.error"


class OpenSearchClient:
    def __init__(self, base_url: str, timeout_seconds: float, max_connections: int = 32) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: bytes | None = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
        assert self._session is not None, "client is not open"
        # Uncompressed answers: on loopback or a LAN, inflating them costs more than the bytes saved.
        headers = {"Content-Type": content_type, "Accept-Encoding": "identity"} if body is not None else None
        try:
            async with self._session.request(method, self._base_url + path, data=body, headers=headers) as response:
                raw = await response.read()
                return response.status, _parse(raw)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise OpenSearchUnavailable(f"OpenSearch unreachable: {method} {path}: {type(exc).__name__}: {exc}") from exc

    async def bulk(self, body: bytes) -> tuple[int, Any]:
        # Only what `classify` reads: a status per item, and the error of those that failed.
        return await self.request("POST", _BULK_PATH, body, "application/x-ndjson")


def _parse(raw: bytes) -> Any:
    try:
        return _decode(raw) if raw else None
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace")
