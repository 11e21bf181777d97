"""uvicorn's httptools protocol with the connection limits a public endpoint needs.

uvicorn with httptools bounds neither the request head nor the time a client may take to send it, and it
closes a connection with unread bytes (which makes the kernel answer with a reset, losing the response).
This subclass adds, before any request reaches the app:

- the head (request line and headers) is counted as it arrives and refused past MAX_HEADER_BYTES (431),
  a request line past MAX_HEADER_LINE_BYTES (414), a header line past it or more than MAX_HEADERS (431):
  never more than MAX_HEADER_BYTES plus one socket read is buffered;
- the whole head must arrive within HEADER_READ_TIMEOUT_SECONDS of the connection's start or of the end
  of the previous response (trickling a header line at a time does not extend it); one periodic sweep
  per process closes the late ones, rather than a timer per request;
- the same timeout bounds an idle keep-alive connection (uvicorn's own keep-alive timer is not armed);
- beyond MAX_CONNECTIONS a new connection is answered 503 with Retry-After at once;
- a connection is closed the way nginx does ("lingering close"): the answer is sent, the write side shut,
  and what the client still sends is read and dropped for a bounded time and size, so the client reads the
  answer (a 413, a 431) instead of a reset.

A small, complete single-event `POST /events` is answered here, below ASGI (api/fastpath.py, docs/http.md);
its body is bounded by BODY_READ_TIMEOUT_SECONDS through the same sweep. Every other request's body
deadline stays with the app (api/deadlines.py).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import weakref
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .. import metrics
from ..settings import Settings
from . import fastpath, wire
from .answers import Answer, late_body_answer, refused

log = logging.getLogger(__name__)

# A lingering close reads and drops at most this much, for at most this long (nginx: lingering_time 30 s):
# enough for a client to finish sending a body it was refused for and read the answer.
LINGER_SECONDS = 5.0
LINGER_BYTES = 16 * 1024 * 1024
# A connection refused for capacity has sent at most its first request: it needs little time. It holds a
# descriptor from the reserve while it lingers, so only so many linger; the others are closed at once (the
# 503 is sent first, but a client still sending may get a reset instead).
OVER_CAPACITY_LINGER_SECONDS = 1.0
OVER_CAPACITY_LINGERING = 32
# Descriptors kept out of MAX_CONNECTIONS for everything else: the store, OpenSearch connections, logs,
# and the connections being refused beyond the cap.
FILE_DESCRIPTOR_RESERVE = 128
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_line_bytes: int
    max_header_bytes: int
    max_headers: int
    header_read_timeout_seconds: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings, max_connections: int) -> "ConnectionLimits":
        return cls(settings.max_header_line_bytes, settings.max_header_bytes, settings.max_headers,
                   settings.header_read_timeout_seconds, max_connections)


def connection_cap(max_connections: int) -> int:
    """Raise this process's open-file soft limit to its hard limit (worker processes inherit it) and return
    how many connections fit in it with FILE_DESCRIPTOR_RESERVE to spare: MAX_CONNECTIONS, or fewer, with a
    warning, when the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(soft, max_connections + FILE_DESCRIPTOR_RESERVE) if hard == resource.RLIM_INFINITY else hard
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    fitting = max(1, soft - min(FILE_DESCRIPTOR_RESERVE, soft // 2))
    if fitting < max_connections:
        log.warning("the open-file limit (%d) leaves room for %d connections, not MAX_CONNECTIONS=%d: beyond "
                    "%d connections are answered 503; raise the hard limit (ulimit -Hn, LimitNOFILE=) to lift this",
                    soft, fitting, max_connections, fitting)
    return min(max_connections, fitting)


class RequestRefused(Exception):
    """Raised inside a parser callback to stop parsing a head over a limit (never leaves this module)."""


class CollectorHttpProtocol(HttpToolsProtocol):
    """One connection. Passed to uvicorn as `http=functools.partial(CollectorHttpProtocol, limits=...)`."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        # Bytes the head being received may still use; None while a body is read or a response written.
        self.head_room: int | None = limits.max_header_bytes
        # Loop time at which the sweep closes this connection (head overdue, or lingering done); None: never.
        self.close_at: float | None = None
        self.raw_transport: asyncio.Transport = None  # type: ignore[assignment]
        self._reading_requests = True
        self._lingering = False
        self._discard_room = LINGER_BYTES
        self._shutting_down = False
        self._refusal: tuple[int, str] | None = None
        self._answered_one = False
        # The fast path (api/fastpath.py): its handler, or None when off; the body of the request it is
        # reading (None: not reading one); whether that request keeps the connection; whether its answer is
        # still awaited (a durable commit), with reading paused and later requests queued behind it.
        self.fast: fastpath.FastIngest | None = None
        self._fast_body: list[bytes] | None = None
        self._fast_keep_alive = True
        self._fast_waiting = False
        # What the head being parsed says about the fast path, noted as its headers arrive: its
        # Content-Length (b"" when sent twice), and whether a header sends it to the app.
        self._content_length: bytes | None = None
        self._asgi_header = False
        self._connection_header = False

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.raw_transport = transport
        super().connection_made(_LingeringTransport(transport, self))
        self.fast = fastpath.FastIngest.of(self.app)
        self.close_at = self.loop.time() + self.limits.header_read_timeout_seconds
        _Sweeper.watch(self.loop, self.server_state, self.connections, self.limits.header_read_timeout_seconds)
        over_capacity = len(self.connections) - self.limits.max_connections
        if over_capacity > 0:
            # Answered before the request is read: waiting for the head would hold a descriptor for up to
            # HEADER_READ_TIMEOUT_SECONDS, which is what the cap is there to prevent.
            log.warning("over MAX_CONNECTIONS (%d): new connections answered 503", self.limits.max_connections)
            metrics.connections_refused.labels("over_capacity").inc()
            self._write_error(503, "too many connections, try again later",
                              [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
            if over_capacity <= OVER_CAPACITY_LINGERING:
                self.close_lingering(OVER_CAPACITY_LINGER_SECONDS)
            else:
                self._close_now()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._fast_body is not None:
            # The client left before the end of its body: the request never happened, nothing is kept.
            self._fast_body = None
            self.close_at = None
            refused("aborted")
        super().connection_lost(exc)

    def close_lingering(self, seconds: float = LINGER_SECONDS) -> None:
        """Shut the write side once the answer is out, then drop what the client still sends until it
        closes, `seconds` pass or LINGER_BYTES arrive; a plain close would reset the connection while the
        client's bytes are unread, and the client would lose the answer."""
        if self._lingering:
            return
        self._lingering = True
        self._reading_requests = False
        transport = self.raw_transport
        if self._shutting_down or transport.is_closing():
            transport.close()
            return
        if transport.can_write_eof():
            transport.write_eof()
        self.flow.resume_reading()
        self.close_at = self.loop.time() + seconds

    def overdue(self) -> None:
        """The sweep found `close_at` passed: the head came too late, a fast-path body did, or lingering is
        over."""
        if self._fast_body is not None and not self._lingering:
            # The app's 408 for a late body; the rest of the body is not awaited: the connection ends.
            self._fast_body = None
            self._fast_keep_alive = False
            self._fast_answered(late_body_answer())
            return
        if not self._lingering:
            log.info("closed a connection that sent no complete request head within HEADER_READ_TIMEOUT_SECONDS")
            if self.head_room != self.limits.max_header_bytes or not self._answered_one:
                # Not a keep-alive connection left idle after its answers, which is a normal end.
                metrics.connections_refused.labels("head_timeout").inc()
        self._close_now()

    def _close_now(self) -> None:
        self._reading_requests = False
        self.close_at = None
        self.raw_transport.close()

    def shutdown(self) -> None:
        self._shutting_down = True
        if self._fast_waiting:
            # Its answer (a durable commit) is still to come: the connection ends after it. A body still
            # arriving is not waited for: the connection is closed as an idle one, nothing was acknowledged.
            self._fast_keep_alive = False
        elif self._lingering:
            self.raw_transport.close()
        else:
            super().shutdown()

    # Reading

    def data_received(self, data: bytes) -> None:
        if not self._reading_requests:
            self._discard(len(data))
            return
        room = self.head_room
        if room is not None:
            if len(data) > room:
                self._receive_past_head_room(data, room)
                return
            self.head_room = room - len(data)
        self._feed(data)

    def _receive_past_head_room(self, data: bytes, room: int) -> None:
        """Feed only what the head may still use; the rest only if the head ended within it."""
        self.head_room = 0
        self._feed(data[:room])
        if not self._reading_requests:
            return
        if self.head_room == 0 and len(getattr(self, "url", b"")) > self.limits.max_header_line_bytes:
            self._refuse(414, "request line longer than MAX_HEADER_LINE_BYTES")
        elif self.head_room == 0:
            self._refuse(431, "request head larger than MAX_HEADER_BYTES")
        else:
            self.data_received(data[room:])

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            elif not self._reading_requests:
                pass  # parsing stopped by on_headers_complete: the connection is closing
            else:
                log.warning("invalid HTTP request received")
                self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _discard(self, size: int) -> None:
        self._discard_room -= size
        if self._discard_room < 0:
            self._close_now()

    # Parser callbacks: the hot path, so the limits are checked once a head is complete (it is bounded by
    # MAX_HEADER_BYTES as it arrives), and uvicorn's short bodies are inlined rather than reached via super().

    def on_message_begin(self) -> None:
        # uvicorn builds the ASGI scope here; a fast-path request never needs one, so it is built in
        # on_headers_complete, for the requests that go to the app.
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._content_length = None
        self._asgi_header = False
        self._connection_header = False

    def _new_scope(self) -> dict[str, Any]:
        """uvicorn's scope of the request whose head was parsed (HttpToolsProtocol.on_message_begin's)."""
        return {"type": "http", "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                "http_version": "1.1", "server": self.server, "client": self.client, "scheme": self.scheme,
                "root_path": self.root_path, "headers": self.headers, "state": self.app_state.copy()}

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _NOTED_HEADERS:
            if name == b"content-length":
                self._content_length = b"" if self._content_length is not None else value
            elif name == b"connection":
                self._connection_header = True
            else:
                self._asgi_header = True
                if name == b"expect" and value.lower() == b"100-continue":
                    self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self.url) > limits.max_header_line_bytes:
            self._stop(414, "request line longer than MAX_HEADER_LINE_BYTES")
        if len(self.headers) > limits.max_headers:
            self._stop(431, "more headers than MAX_HEADERS")
        # No line can be longer than the head: only a head that used more than a line's worth is looked at.
        if limits.max_header_bytes - self.head_room > limits.max_header_line_bytes and any(
                len(name) + len(value) > limits.max_header_line_bytes for name, value in self.headers):
            self._stop(431, "header line longer than MAX_HEADER_LINE_BYTES")
        self.head_room = None
        self.close_at = None
        if not self._reading_requests:
            # A fast-path answer closed the connection within this read: what the client sent after the
            # request it asked to be the last is not read (an exception is the parser's only way to stop).
            raise RequestRefused("connection closing")
        if self.fast is not None and self._takes_fast_path():
            self._fast_body = []
            self._fast_keep_alive = self.parser.should_keep_alive()
            self.close_at = self.loop.time() + self.fast.body_read_timeout_seconds
            return
        # Counted before any request the app answers, so that /metrics includes every earlier answer.
        fastpath.TALLY.flush()
        self.scope = self._new_scope()  # type: ignore[assignment]
        super().on_headers_complete()

    def _takes_fast_path(self) -> bool:
        """A single-event POST /events the fast path answers the same as the app would (docs/http.md)."""
        # The cheapest tests first: this runs for every request.
        length = self._content_length
        if (self.url != b"/events" or self._asgi_header or length is None or not length.isdigit()
                or int(length) > fastpath.MAX_FAST_BODY_BYTES):
            return False
        # Answers go out in order: nothing may be waiting for one.
        cycle = self.cycle
        if self._fast_waiting or self.pipeline or (cycle is not None and not cycle.response_complete):
            return False
        parser = self.parser
        return (parser.get_method() == b"POST" and self._is_http_1_1(parser.should_keep_alive())
                and not parser.should_upgrade() and self.fast.accepting)  # type: ignore[union-attr]

    def _is_http_1_1(self, keep_alive: bool) -> bool:
        # httptools formats the version as a string for every call. Without a Connection header, only HTTP/1.1
        # keeps the connection (llhttp: HTTP/1.0 needs `Connection: keep-alive`, and it refuses versions
        # other than 0.9, 1.0, 1.1 and 2.0), so the usual request is told without asking.
        return (keep_alive and not self._connection_header) or self.parser.get_http_version() == "1.1"

    def on_body(self, body: bytes) -> None:
        if self._fast_body is not None:
            self._fast_body.append(body)
        else:
            super().on_body(body)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._fast_waiting:
            # A fast-path answer is still to be written: this one goes after it.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))
        else:
            super()._start_asgi_task(cycle, app)

    def _fast_request(self) -> None:
        assert self._fast_body is not None and self.fast is not None
        body = b"".join(self._fast_body)
        self._fast_body = None
        self.close_at = None
        self._fast_waiting = True
        try:
            self.fast.handle(self.headers, self.client, body, self._fast_answered)
        except Exception:
            # A bug, not the client's fault: the 500 uvicorn gives an app that fails, not its 400 for a parser
            # callback that raised.
            log.exception("the fast path failed on a request")
            if self._fast_waiting:
                self._fast_answered(fastpath.INTERNAL_ERROR)
        if self._fast_waiting:
            # Waiting for a commit: later requests on this connection wait too, so answers stay in order.
            self.flow.pause_reading()

    def _fast_answered(self, whole: Answer) -> None:
        """Write a fast-path answer, then go on as after any response (on_response_complete)."""
        waited = self._fast_waiting
        self._fast_waiting = False
        fastpath.TALLY.answered(self.loop)
        self.server_state.total_requests += 1
        self._answered_one = True
        transport = self.raw_transport
        if self._lingering or transport.is_closing():
            return
        encoded, keep_alive = wire.encode(whole, self.server_state.default_headers, self._fast_keep_alive)
        transport.write(encoded)
        if not keep_alive:
            self.close_lingering()
            return
        if waited:
            self.flow.resume_reading()
        self._next_request()

    def on_message_complete(self) -> None:
        self.head_room = self.limits.max_header_bytes
        if self._fast_body is not None:
            self._fast_request()
            return
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.message_event.set()

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        self._answered_one = True
        if self._lingering or self.raw_transport.is_closing():
            return
        self.flow.resume_reading()
        self._next_request()

    def _next_request(self) -> None:
        """After an answer: start the pipelined request that waited for it, or time the next head."""
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._reading_requests:
            # The next head's time counts from here. It also bounds an idle keep-alive connection, in place
            # of uvicorn's keep-alive timer (a timer per request, where the sweep costs nothing per request).
            self.close_at = self.loop.time() + self.limits.header_read_timeout_seconds

    def _stop(self, status: int, reason: str) -> None:
        self._refusal = (status, reason)
        raise RequestRefused(reason)

    def _refuse(self, status: int, reason: str) -> None:
        log.warning("refused a request head (%d): %s", status, reason)
        metrics.connections_refused.labels("head_too_large").inc()
        self._reading_requests = False
        self.head_room = None
        if self._fast_waiting:
            self._fast_keep_alive = False  # as below, behind a fast-path answer still to come
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # Earlier pipelined requests are still being answered: the refusal cannot be written in front of
            # their answers, so the connection ends after the last of them instead (its close lingers).
            self.cycle.keep_alive = False
            return
        self._write_error(status, reason)
        self.close_lingering()

    def _write_error(self, status: int, reason: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = b'{"error":"' + reason.encode() + b'"}'
        headers = [*self.server_state.default_headers, (b"content-type", b"application/json"), *(extra or []),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        lines = [name + b": " + value + b"\r\n" for name, value in headers]
        self.raw_transport.write(b"".join([STATUS_LINE[status], *lines, b"\r\n", body]))


# Requests with these headers go to the ASGI app: a streamed or encoded body, a 100-continue to send first,
# a CORS answer, an upgrade.
_ASGI_HEADERS = frozenset({b"transfer-encoding", b"content-encoding", b"expect", b"origin", b"upgrade"})
_NOTED_HEADERS = _ASGI_HEADERS | {b"content-length", b"connection"}


class _LingeringTransport:
    """The transport as uvicorn's request cycle sees it: its close() lingers, and the connection counts as
    closing once it stopped reading requests. Hot methods are the real transport's own bound methods."""

    def __init__(self, transport: asyncio.Transport, protocol: CollectorHttpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.write = transport.write
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading
        self.get_extra_info = transport.get_extra_info

    def close(self) -> None:
        self._protocol.close_lingering()

    def is_closing(self) -> bool:
        return not self._protocol._reading_requests or self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Sweeper:
    """Closes the connections whose `close_at` has passed, every quarter of the head timeout (at most every
    second), while the server has connections: one task per server, not a timer per request."""

    _running: "weakref.WeakKeyDictionary[Any, asyncio.Task]" = weakref.WeakKeyDictionary()

    @classmethod
    def watch(cls, loop: asyncio.AbstractEventLoop, server_state: Any, connections: set,
              timeout_seconds: float) -> None:
        task = cls._running.get(server_state)
        if task is None or task.done():
            cls._running[server_state] = loop.create_task(
                cls._sweep(connections, min(1.0, timeout_seconds / 4)), name="connection-sweeper")

    @staticmethod
    async def _sweep(connections: set, interval_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        while connections:
            await asyncio.sleep(interval_seconds)
            now = loop.time()
            for connection in list(connections):
                close_at = getattr(connection, "close_at", None)
                if close_at is not None and close_at <= now:
                    connection.overdue()
