"""The few OpenSearch calls the collector makes, through one transport (shipper/transport.py: by default one
pooled aiohttp session) to every node of the cluster.

A request goes to the next live node (shipper/nodes.py); when that node refuses, resets, fails TLS or does
not answer in time, it is set aside and the same request goes to the next one. That is safe because
every request the collector makes may be repeated: bulk `create`s with `_id = log_id` (a repeat answers
409, counted as delivered) and the template's PUT. An answer, whatever its status, comes from a node that
is up, so it is returned as it is and its meaning is decided upstream (retry.pause_reason, bulk.classify).

The transport's errors are translated here: callers see OpenSearchUnavailable, naming the setting to check,
when no node answered, and (status, parsed body) otherwise. Credentials travel in headers only, never in
a URL, so no error text can carry them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import aiohttp
import msgspec

from ..exceptions import OpenSearchUnavailable
from ..settings import Settings
from .connection import Connection, Node, connection_from_settings, parse_nodes
from .nodes import NodePool
from .transport import AiohttpTransport, Transport

log = logging.getLogger(__name__)

_decode = msgspec.json.decode
_BULK_PATH = "/_bulk?filter_path=errors,error,status,items.*.status,items.*.error"


class OpenSearchClient:
    def __init__(self, connection: Connection | str, timeout_seconds: float, max_connections: int = 32,
                 transport: Transport | None = None) -> None:
        """`connection`: from `connection_from_settings`, or a plain URL list without credentials or TLS options.
        `transport`: how requests leave (aiohttp's pooled session unless a test brings its own)."""
        self._connection = connection if isinstance(connection, Connection) else Connection(parse_nodes(connection))
        self._timeout_seconds = timeout_seconds
        self._transport = transport or AiohttpTransport(timeout_seconds, max_connections,
                                                        self._connection.ssl_context)
        self.nodes = NodePool(self._connection.nodes)

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int = 32) -> "OpenSearchClient":
        return cls(connection_from_settings(settings), settings.open_search_timeout_seconds, max_connections)

    async def open(self) -> None:
        for warning in self._connection.warnings:
            log.warning(warning)
        await self._transport.open()

    async def close(self) -> None:
        await self._transport.close()

    async def request(self, method: str, path: str, body: bytes | None = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
        # Uncompressed answers: on loopback or a LAN, inflating them costs more than the bytes saved.
        headers = {"Content-Type": content_type, "Accept-Encoding": "identity"} if body is not None else {}
        failures = []
        for node in self.nodes.candidates():
            started = self.nodes.now()
            try:
                return await self._send(node, method, path, body, headers)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                reason = self._describe(exc)
                self.nodes.set_aside(node, reason, started)
                failures.append(f"{node.label}: {reason}")
        raise OpenSearchUnavailable(f"OpenSearch unreachable: {method} {path}: {'; '.join(failures)}")

    async def bulk(self, body: bytes) -> tuple[int, Any]:
        # Only what `classify` reads: a status per item, and the error of those that failed.
        return await self.request("POST", _BULK_PATH, body, "application/x-ndjson")

    async def _send(self, node: Node, method: str, path: str, body: bytes | None,
                    headers: dict[str, str]) -> tuple[int, Any]:
        url = node.base + path
        if node.authorization is not None:
            headers = {**headers, "Authorization": node.authorization}
        elif self._connection.signer is not None:
            # Hashing a large body and refreshing credentials must not hold the event loop.
            headers = await asyncio.to_thread(self._connection.signer.sign, method, url, body, headers)
        status, raw = await self._transport.send(method, url, body, headers)
        self.nodes.answered(node)
        return status, _parse(raw)

    def _describe(self, exc: BaseException) -> str:
        """What went wrong, and the setting to look at."""
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return (f"its TLS certificate is not trusted ({exc.certificate_error}): check OPEN_SEARCH_CA_CERTS "
                    "(a PEM bundle of the CA that signed it) and the host name in OPEN_SEARCH_DNS")
        tls_error = _tls_error(exc)
        if tls_error is not None:
            return (f"TLS failed ({type(tls_error).__name__}: {tls_error}): check OPEN_SEARCH_CA_CERTS, and "
                    "OPEN_SEARCH_CLIENT_CERT / OPEN_SEARCH_CLIENT_KEY if it asks for a client certificate")
        if isinstance(exc, asyncio.TimeoutError):
            return f"no answer within {self._timeout_seconds:g} s (OPEN_SEARCH_TIMEOUT_SECONDS)"
        return f"{type(exc).__name__}: {exc}"


def _tls_error(exc: BaseException | None) -> ssl.SSLError | None:
    """The TLS error behind `exc`, if any: aiohttp wraps those met after the handshake in its own errors."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ssl.SSLError):
            return exc
        if isinstance(exc, aiohttp.ClientSSLError) and isinstance(exc.os_error, ssl.SSLError):
            return exc.os_error
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _parse(raw: bytes) -> Any:
    try:
        return _decode(raw) if raw else None
    except msgspec.DecodeError:
        return raw.decode("utf-8", "replace")
