"""The HTTP API as a bare ASGI application: no framework on the hot path.

Routes: GET /ping, POST /events, POST /events/batch, POST /events/beacon, GET /metrics, GET /livez and
GET /readyz (probes.py); OPTIONS on the ingest routes when CORS is on (api/cors.py). The lifespan protocol
starts and stops the Collector, so whatever serves this app (uvicorn here) drives the pipeline's lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import msgspec

from .. import metrics
from ..enrich import Enricher
from ..enrich.client_time import collector_clock
from ..envelope import build_envelope
from ..exceptions import AuthError, BodyTooLarge, InvalidEvent, StoreError, UnsupportedEncoding
from ..collecting import CREATED, PENDING
from ..modes import AnyCollector, open_collector
from ..settings import Settings
from . import beacon
from . import probes
from .auth import TokenVerifier
from .batch import DecodedBatch, Rejection, decode_batch, inflate
from .cors import CorsPolicy, is_preflight
from .deadlines import BodyReadDeadlines
from .keys import KeyRing
from .ratelimit import UserRateLimiter
from .validation import MAX_STRING_CHARS, decode_event

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

# Request headers copied into the document: (name on the wire, name in the document's header map).
COPIED_HEADERS = tuple((name.encode(), name) for name in ("device-uuid", "app-version", "os-version", "user-agent"))
_JSON = [(b"content-type", b"application/json")]
_encode = msgspec.json.encode
_RETRY_AFTER_SECONDS = b"5"
# The ingest routes, by raw path: what each body holds and how it is answered.
_EVENT, _BATCH, _BEACON = "event", "batch", "beacon"
_INGEST_ROUTES = {b"/events": _EVENT, b"/events/batch": _BATCH, b"/events/beacon": _BEACON}


def _messages(status: int, body: bytes, headers: list[tuple[bytes, bytes]], length: bool = True) -> tuple[dict, dict]:
    """The ASGI messages of a whole response. A Content-Length spares the server chunked framing (a 204 has
    neither: `length=False`)."""
    if length:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body})


# Routes that only read, answering GET and HEAD.
_READ_ROUTES = frozenset({b"/ping", b"/metrics", b"/livez", b"/readyz"})

# The two answers of the hot path, built once (uvicorn reads these messages and keeps nothing of them).
_STATUS_ANSWERS = {status: _messages(200, _encode({"status": status}), _JSON) for status in (CREATED, PENDING)}


class CollectorApp:
    def __init__(self, settings: Settings, collector: AnyCollector | None = None) -> None:
        self.settings = settings
        self.collector = collector or open_collector(settings)
        self.verifier = TokenVerifier(KeyRing.from_settings(settings))
        self.cors = CorsPolicy.from_setting(settings.cors_allowed_origins)
        self.deadlines = BodyReadDeadlines(settings.body_read_timeout_seconds)
        self.rate_limiter = (UserRateLimiter(settings.rate_limit_per_user, settings.rate_limit_burst)
                             if settings.rate_limit_per_user > 0 else None)
        self.enricher = Enricher(settings)
        self.clock = collector_clock(settings.test_clock_offset_seconds)
        self.max_event_age_seconds = settings.pending_retention_days * 86400
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
                self.collector.watch_stop_signals()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._sweeper is not None:
                    self._sweeper.cancel()
                await self.collector.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        # Route on the path as sent: "/events%2Fbatch" is not "/events/batch".
        path, method = scope.get("raw_path") or scope["path"].encode(), scope["method"]
        route = _INGEST_ROUTES.get(path)
        if route is not None:
            if self.cors is not None:
                origin = self.cors.allowed_origin(scope["headers"])
                if method == "OPTIONS":
                    await self._preflight(scope, send, origin)
                    return
                if origin is not None:
                    send = self.cors.answering(send, origin)
            if method != "POST":
                allowed = b"POST" if self.cors is None else b"POST, OPTIONS"
                await _respond(send, 405, {"error": "use POST"}, [(b"allow", allowed)])
            elif not self.collector.accepting:
                await _unavailable(send, "the collector is shutting down")
            else:
                await self._ingest(scope, receive, send, route)
        elif path in _READ_ROUTES:
            if method not in ("GET", "HEAD"):
                # uvicorn sends no body for HEAD: the answer's headers are those GET would have.
                await _respond(send, 405, {"error": "use GET or HEAD"}, [(b"allow", b"GET, HEAD")])
            elif path == b"/ping":
                await _respond_raw(send, 200, b"pong", [(b"content-type", b"text/plain")])
            elif path == b"/livez":
                await _respond(send, 200, probes.liveness())
            elif path == b"/readyz":
                ready, report = probes.readiness(self.collector)
                await _respond(send, 200 if ready else 503, report)
            else:
                page, content_type = metrics.exposition()
                await _respond_raw(send, 200, page, [(b"content-type", content_type.encode())])
        else:
            await _respond(send, 404, {"error": f"no route for {method} {scope['path']}"})

    async def _preflight(self, scope: dict[str, Any], send: Send, origin: bytes | None) -> None:
        assert self.cors is not None
        if origin is None:
            # No CORS header: the browser reports the preflight as failed and sends nothing.
            await _respond(send, 403, {"error": "this origin is not in CORS_ALLOWED_ORIGINS"})
        elif not is_preflight(scope["headers"]):
            await _respond(send, 400, {"error": "OPTIONS is answered only as a CORS preflight "
                                                "(with Origin and Access-Control-Request-Method)"})
        else:
            await _respond_raw(send, 204, b"", self.cors.preflight_headers(origin), length=False)

    async def _ingest(self, scope: dict[str, Any], receive: Receive, send: Send, route: str) -> None:
        headers = _headers(scope)
        try:
            if route is _BEACON:
                user_id, copied, decoded = await self._read_beacon(scope, headers, receive)
            else:
                user_id = self.verifier.user_id(headers.get(b"authorization"))
                copied = copied_headers(headers)
                body = self._decoded_body(await self._read_body(headers, receive), headers)
                if route is _BATCH:
                    decoded = self._decode_batch(body, headers)
                else:
                    decoded = DecodedBatch(events=[decode_event(body)], positions=[0])
        except (AuthError, InvalidEvent) as exc:
            await send_answer(send, refusal_answer(exc))
            return
        except TimeoutError:
            _refused("timeout")
            await _respond(send, 408, {"error": "request body not received in time"})
            return
        except ClientDisconnected:
            # The client left before the end of its body: the request never happened, nothing is kept.
            _refused("aborted")
            return

        events, retry_after, refusal = self.limit_rate(user_id, decoded)
        if refusal is not None:
            await send_answer(send, refusal)
            return
        envelopes = self.envelopes(scope, user_id, copied, events)
        try:
            status = await self.collector.accept(envelopes) if envelopes else CREATED
        except StoreError as exc:
            await send_answer(send, store_failed_answer(envelopes, exc))
            return
        rejected = decoded.rejected
        count_kept(status, envelopes, rejected)
        if route is _EVENT:
            start, body = _STATUS_ANSWERS[status]
            await send(start)
            await send(body)
            return
        if route is _BEACON:
            await _respond_raw(send, 204, b"", [], length=False)
            return
        extra = [(b"retry-after", retry_after)] if retry_after is not None else []
        await _respond(send, 200, {
            "status": status,
            "accepted": len(envelopes),
            "rejected": [_rejection(rejection) for rejection in rejected],
        }, extra)

    # The steps of an ingest request that the protocol's fast path (api/fastpath.py) shares with _ingest.

    def limit_rate(self, user_id: str, decoded: DecodedBatch) -> tuple[list, bytes | None, Answer | None]:
        """The events the user's rate allows, the Retry-After of the others (None: all allowed), and the 429
        answer when none is allowed."""
        events = decoded.events
        retry_after = None
        if self.rate_limiter is not None and events:
            granted = self.rate_limiter.take(user_id, len(events))
            if granted < len(events):
                metrics.received_rate_limited.inc(len(events) - granted)
                retry_after = str(self.rate_limiter.retry_after_seconds(user_id)).encode()
                if granted == 0:
                    metrics.requests_refused.labels("rate_limited").inc()
                    return [], retry_after, answer(
                        429, {"error": "rate limit exceeded: RATE_LIMIT_PER_USER events a second"},
                        [(b"retry-after", retry_after)])
                limited = decoded.positions[granted:]
                decoded.rejected.extend(decoded.rejection(position, "rate limit exceeded", None, 429)
                                        for position in limited)
                decoded.rejected.sort(key=lambda rejection: rejection.index)
                events = events[:granted]
        return events, retry_after, None

    def envelopes(self, scope: dict[str, Any], user_id: str, copied: dict[str, str | None],
                  events: list) -> list:
        """The documents of the events; `scope` needs "client" (the peer) and "headers" (for enrichment)."""
        received_at = self.clock()
        environment = self.settings.server_environment
        client = self.enricher.client(scope, copied["user-agent"])
        return [build_envelope(environment, event, user_id, copied, received_at, client,
                               self.max_event_age_seconds) for event in events]

    async def _read_beacon(self, scope: dict[str, Any], headers: dict[bytes, bytes],
                           receive: Receive) -> tuple[str, dict[str, str | None], DecodedBatch]:
        """A beacon's token may be in its body: the body is read and decoded first, then the request goes
        on as /events would (api/beacon.py)."""
        beacon.check_content_type(headers)
        body = self._decoded_body(await self._read_body(headers, receive), headers)
        event = decode_event(body)
        headers = beacon.as_event_request(scope.get("query_string", b""), headers, body)
        user_id = self.verifier.user_id(headers.get(b"authorization"))
        return user_id, copied_headers(headers), DecodedBatch(events=[event], positions=[0])

    def _decoded_body(self, body: bytes, headers: dict[bytes, bytes]) -> bytes:
        """The body with its Content-Encoding undone: gzip (bounded: a bomb stops at MAX_BODY_BYTES)."""
        encoding = headers.get(b"content-encoding")
        if encoding is None:
            return body
        encoding = encoding.strip().lower()
        if encoding == b"gzip":
            return inflate(body, self.settings.max_body_bytes)
        if encoding in (b"identity", b""):
            return body
        raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}: use gzip")

    def _decode_batch(self, body: bytes, headers: dict[bytes, bytes]) -> DecodedBatch:
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
                if message["type"] == "http.disconnect":
                    raise ClientDisconnected
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


class ClientDisconnected(Exception):
    """The client closed the connection before sending its whole body (never leaves this module)."""


# 4xx statuses of InvalidEvent and its subclasses, as the `reason` label of requests_refused.
_REFUSAL_REASONS = {413: "too_large", 415: "unsupported_encoding"}


# A whole answer: status, headers (Content-Length included), body; what both the ASGI app and the fast path send.
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def answer(status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> Answer:
    body = _encode(payload)
    return status, [*_JSON, *(extra or []), (b"content-length", str(len(body)).encode())], body


async def send_answer(send: Send, whole: Answer) -> None:
    status, headers, body = whole
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def refusal_answer(exc: AuthError | InvalidEvent) -> Answer:
    """The answer to a request refused for its token (401) or its content (4xx), counted."""
    if isinstance(exc, AuthError):
        _refused("unauthorized")
        return answer(401, {"error": str(exc)}, [(b"www-authenticate", b"Bearer")])
    _refused(_REFUSAL_REASONS.get(exc.status, "invalid"))
    return answer(exc.status, _error(exc.message, exc.field))


def store_failed_answer(envelopes: list, exc: StoreError) -> Answer:
    metrics.received_unavailable.inc(max(1, len(envelopes)))
    log.error("could not keep %d events: %s", len(envelopes), exc)
    return answer(503, {"error": "the collector cannot store the events now"},
                  [(b"retry-after", _RETRY_AFTER_SECONDS)])


def count_kept(status: str, envelopes: list, rejected: list[Rejection]) -> None:
    (metrics.received_created if status == CREATED else metrics.received_pending).inc(len(envelopes))
    invalid = sum(1 for rejection in rejected if rejection.status != 429)
    if invalid:
        metrics.received_rejected.inc(invalid)


def _refused(reason: str) -> None:
    metrics.requests_refused.labels(reason).inc()
    metrics.received_rejected.inc()


def _rejection(rejection: Rejection) -> dict[str, Any]:
    answer: dict[str, Any] = {"index": rejection.index, "status": rejection.status, "error": rejection.reason}
    if rejection.field is not None:
        answer["field"] = rejection.field
    if rejection.line is not None:
        answer["line"] = rejection.line
    return answer


def _error(message: str, field: str | None) -> dict[str, str]:
    return {"error": message} if field is None else {"error": message, "field": field}


def _headers(scope: dict[str, Any]) -> dict[bytes, bytes]:
    return dict(scope["headers"])


def copied_headers(headers: dict[bytes, bytes]) -> dict[str, str | None]:
    copied: dict[str, str | None] = {}
    for wire_name, name in COPIED_HEADERS:
        value = headers.get(wire_name)
        # HTTP's optional whitespace around a value is not part of it; the parser keeps the trailing kind.
        text = None if value is None else _header_text(value.strip(b" \t"))
        if text is not None and len(text) > MAX_STRING_CHARS:
            raise InvalidEvent(f"header {name} is longer than {MAX_STRING_CHARS} characters", name)
        copied[name] = text
    return copied


def _header_text(value: bytes) -> str:
    """Header bytes as text: UTF-8 when they are (what apps send), else latin-1, as HTTP defines them;
    never a U+FFFD in place of a byte the client sent."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


async def _respond(send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _respond_raw(send, status, _encode(payload), _JSON + (extra or []))


async def _respond_raw(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
                       length: bool = True) -> None:
    start, body_message = _messages(status, body, headers, length)
    await send(start)
    await send(body_message)


async def _unavailable(send: Send, reason: str) -> None:
    await _respond(send, 503, {"error": reason}, [(b"retry-after", _RETRY_AFTER_SECONDS)])


def create_app() -> CollectorApp:
    """The app of one of several worker processes (uvicorn's factory): settings from the environment, its
    slot's share of the buffer and shippers; the worker in slot 0 also runs the store's janitor."""
    import os

    from ..metrics import MULTIPROCESS_DIR_VARIABLE
    from ..settings import load_settings
    from ..worker_slots import claim_slot

    settings = load_settings()
    slot = claim_slot(os.environ[MULTIPROCESS_DIR_VARIABLE], settings.server_workers)
    share = settings.for_one_worker(slot)
    return CollectorApp(share, open_collector(share, runs_janitor=slot == 0))
