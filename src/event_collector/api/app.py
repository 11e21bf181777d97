"""The HTTP API as a bare ASGI application: no framework on the hot path.

Routes: GET /ping, POST /events, POST /events/batch, GET /metrics. The lifespan protocol starts and
stops the Collector, so whatever serves this app (uvicorn here) drives the pipeline's lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import msgspec

from .. import metrics
from ..envelope import build_envelope
from ..exceptions import AuthError, BodyTooLarge, InvalidEvent, StoreError
from ..lifecycle import CREATED, PENDING, Collector
from ..settings import Settings
from .auth import TokenVerifier
from .batch import DecodedBatch, decode_batch, inflate
from .deadlines import BodyReadDeadlines
from .validation import MAX_STRING_CHARS, decode_event

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

# Request headers copied into the document: (name on the wire, name in the document's header map).
COPIED_HEADERS = tuple((name.encode(), name) for name in ("device-uuid", "app-version", "os-version", "user-agent"))
_JSON = [(b"content-type", b"application/json")]
_encode = msgspec.json.encode
_RETRY_AFTER_SECONDS = b"5"


def _messages(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[dict, dict]:
    """The ASGI messages of a whole response. A Content-Length spares the server chunked framing."""
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


# The two answers of the hot path, built once (uvicorn reads these messages and keeps nothing of them).
_STATUS_ANSWERS = {status: _messages(200, _encode({"status": status}), _JSON) for status in (CREATED, PENDING)}


class CollectorApp:
    def __init__(self, settings: Settings, collector: Collector | None = None) -> None:
        self.settings = settings
        self.collector = collector or Collector(settings)
        self.verifier = TokenVerifier(settings.jwt_secret)
        self.deadlines = BodyReadDeadlines(settings.body_read_timeout_seconds)
        self._sweeper: asyncio.Task | None = None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.collector.start()
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                self._sweeper = asyncio.create_task(self.deadlines.sweep(), name="body-deadlines")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._sweeper is not None:
                    self._sweeper.cancel()
                await self.collector.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/events" or path == "/events/batch":
            if method != "POST":
                await _respond(send, 405, {"error": "use POST"}, [(b"allow", b"POST")])
            elif not self.collector.accepting:
                await _unavailable(send, "the collector is shutting down")
            else:
                await self._ingest(scope, receive, send, batch=path == "/events/batch")
        elif path == "/ping":
            await _respond_raw(send, 200, b"pong", [(b"content-type", b"text/plain")])
        elif path == "/metrics" and method == "GET":
            page, content_type = metrics.exposition()
            await _respond_raw(send, 200, page, [(b"content-type", content_type.encode())])
        else:
            await _respond(send, 404, {"error": f"no route for {method} {path}"})

    async def _ingest(self, scope: dict[str, Any], receive: Receive, send: Send, batch: bool) -> None:
        headers = _headers(scope)
        try:
            user_id = self.verifier.user_id(headers.get(b"authorization"))
        except AuthError as exc:
            metrics.received_rejected.inc()
            await _respond(send, 401, {"error": str(exc)}, [(b"www-authenticate", b"Bearer")])
            return
        try:
            copied = _copied_headers(headers)
            body = await self._read_body(headers, receive)
            if batch:
                decoded = self._decode_batch(body, headers)
                events, rejected = decoded.events, decoded.rejected
            else:
                events, rejected = [decode_event(body)], []
        except InvalidEvent as exc:
            metrics.received_rejected.inc()
            await _respond(send, exc.status, _error(exc.message, exc.field))
            return
        except TimeoutError:
            metrics.received_rejected.inc()
            await _respond(send, 408, {"error": "request body not received in time"})
            return

        received_at = time.time()
        environment = self.settings.server_environment
        envelopes = [build_envelope(environment, event, user_id, copied, received_at) for event in events]
        try:
            status = await self.collector.accept(envelopes) if envelopes else CREATED
        except StoreError as exc:
            metrics.received_unavailable.inc(max(1, len(envelopes)))
            log.error("could not keep %d events: %s", len(envelopes), exc)
            await _unavailable(send, "the collector cannot store the events now")
            return
        (metrics.received_created if status == CREATED else metrics.received_pending).inc(len(envelopes))
        if rejected:
            metrics.received_rejected.inc(len(rejected))
        if not batch:
            start, body = _STATUS_ANSWERS[status]
            await send(start)
            await send(body)
            return
        await _respond(send, 200, {
            "status": status,
            "accepted": len(envelopes),
            "rejected": [{"index": position, **_error(reason, field)} for position, reason, field in rejected],
        })

    def _decode_batch(self, body: bytes, headers: dict[bytes, bytes]) -> DecodedBatch:
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding == b"gzip":
            body = inflate(body, self.settings.max_body_bytes)
        elif encoding != b"identity":
            raise InvalidEvent(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}: use gzip")
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        return decode_batch(body, content_type == b"application/x-ndjson", self.settings.batch_max_events)

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"body exceeds MAX_BODY_BYTES ({limit} bytes)")
        # A client that stalls mid-body only holds its own connection, and only until its deadline.
        task = asyncio.current_task()
        assert task is not None
        self.deadlines.start(task)
        try:
            chunks, size = [], 0
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(f"body exceeds MAX_BODY_BYTES ({limit} bytes)")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        except asyncio.CancelledError:
            if self.deadlines.expired(task):
                raise TimeoutError from None
            raise
        finally:
            self.deadlines.stop(task)


def _error(message: str, field: str | None) -> dict[str, str]:
    return {"error": message} if field is None else {"error": message, "field": field}


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def _copied_headers(headers: dict[bytes, bytes]) -> dict[str, str | None]:
    copied: dict[str, str | None] = {}
    for wire_name, name in COPIED_HEADERS:
        value = headers.get(wire_name)
        text = None if value is None else value.decode("utf-8", "replace")
        if text is not None and len(text) > MAX_STRING_CHARS:
            raise InvalidEvent(f"header {name} is longer than {MAX_STRING_CHARS} characters", name)
        copied[name] = text
    return copied


async def _respond(send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond_raw(send, status, _encode(payload), _JSON + (extra or []))


async def _respond_raw(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    start, body_message = _messages(status, body, headers)
    await send(start)
    await send(body_message)


async def _unavailable(send: Send, reason: str) -> None:
    await _respond(send, 503, {"error": reason}, [(b"retry-after", _RETRY_AFTER_SECONDS)])


def create_app() -> CollectorApp:
    """The app of one worker process (uvicorn's factory): settings from the environment, its share of the
    buffer and shippers."""
    from ..settings import load_settings

    return CollectorApp(load_settings().for_one_worker())
