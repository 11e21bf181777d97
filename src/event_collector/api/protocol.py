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

A small, complete single-event `POST /events` is answered here, below ASGI (docs/http.md); its body is bounded
by BODY_READ_TIMEOUT_SECONDS through the same sweep. Every other request's body deadline stays with the app
(api/deadlines.py).

One class, CollectorHttpProtocol, in files by concern: this one holds the connection, its limits and its
timeouts; api/fast_dispatch.py which requests take the fast path and how they are carried; api/closing.py the
lingering close and the sweep; api/wire.py the bytes of what the protocol answers itself. What it relies on
of uvicorn's and httptools' internals is listed in docs/http.md and checked by
tests/unit/test_uvicorn_internals.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .. import metrics
from .closing import ConnectionSweeper, LingeringClose, LingeringTransport
from .connection_limits import ConnectionLimits
from .fast_dispatch import FastPathDispatch
from .fastpath import FastIngest
from .wire import refusal

log = logging.getLogger(__name__)

# A connection refused for capacity has sent at most its first request: it needs little time. It holds a
# descriptor from the reserve while it lingers, so only so many linger; the others are closed at once (the
# 503 is sent first, but a client still sending may get a reset instead).
OVER_CAPACITY_LINGER_SECONDS = 1.0
OVER_CAPACITY_LINGERING = 32
RETRY_AFTER_SECONDS = 5


class RequestRefused(Exception):
    """Raised inside a parser callback to stop parsing a head over a limit (never leaves this module)."""


class CollectorHttpProtocol(FastPathDispatch, LingeringClose, HttpToolsProtocol):
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
        self._refusal: tuple[int, str] | None = None
        self._answered_one = False

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.raw_transport = transport
        super().connection_made(LingeringTransport(transport, self))
        self.fast = FastIngest.of(self.app)
        self.close_at = self.loop.time() + self.limits.header_read_timeout_seconds
        ConnectionSweeper.watch(self.loop, self.server_state, self.connections,
                                self.limits.header_read_timeout_seconds)
        over_capacity = len(self.connections) - self.limits.max_connections
        if over_capacity > 0:
            # Answered before the request is read: waiting for the head would hold a descriptor for up to
            # HEADER_READ_TIMEOUT_SECONDS, which is what the cap is there to prevent.
            log.warning("over MAX_CONNECTIONS (%d): new connections answered 503", self.limits.max_connections)
            metrics.connections_refused.labels("over_capacity").inc()
            self._write_refusal(503, "too many connections, try again later",
                                [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])
            if over_capacity <= OVER_CAPACITY_LINGERING:
                self.close_lingering(OVER_CAPACITY_LINGER_SECONDS)
            else:
                self._close_now()

    def overdue(self) -> None:
        """The sweep found `close_at` passed: the head came too late, a fast-path body did, or lingering is
        over."""
        if not self._lingering:
            if self._fast_body is not None:
                self._fast_body_late()
                return
            log.info("closed a connection that sent no complete request head within HEADER_READ_TIMEOUT_SECONDS")
            if self.head_room != self.limits.max_header_bytes or not self._answered_one:
                # Not a keep-alive connection left idle after its answers, which is a normal end.
                metrics.connections_refused.labels("head_timeout").inc()
        self._close_now()

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

    def _receive_past_head_room(self, data: bytes, room: int) -> None:
        """Feed only what the head may still use; the rest only if the head ended within it."""
        self.data_received(data[:room])
        if not self._reading_requests:
            return
        if self.head_room == 0 and len(getattr(self, "url", b"")) > self.limits.max_header_line_bytes:
            self._refuse(414, "request line longer than MAX_HEADER_LINE_BYTES")
        elif self.head_room == 0:
            self._refuse(431, "request head larger than MAX_HEADER_BYTES")
        else:
            self.data_received(data[room:])

    # Parser callbacks (the others are FastPathDispatch's): the hot path, so the limits are checked once a head
    # is complete (it is bounded by MAX_HEADER_BYTES as it arrives).

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
        self._dispatch()

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

    # Refusing a head

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
        self._write_refusal(status, reason)
        self.close_lingering()

    def _write_refusal(self, status: int, reason: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        self.raw_transport.write(refusal(status, reason, self.server_state.default_headers, extra))
