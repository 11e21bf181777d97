"""Which requests the protocol answers itself, on the fast path (api/fastpath.py), and how it carries them:
what a head says is read once it is complete, the body is gathered, handed over whole, and the answer written in
order with the app's (docs/http.md).

The parser callbacks here run for every request, so uvicorn's short bodies are inlined rather than reached
via super(), and uvicorn's ASGI scope is built only for the requests that go to the app.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .answers import Answer, late_body_answer, refused
from .connection_limits import ConnectionLimits
from .fastpath import INTERNAL_ERROR, MAX_FAST_BODY_BYTES, TALLY, FastIngest
from .routes import EVENTS_PATH
from .wire import encode

log = logging.getLogger(__name__)

# Requests with these headers go to the ASGI app: a streamed or encoded body, a 100-continue to send first,
# a CORS answer, an upgrade.
_ASGI_HEADERS = frozenset({b"transfer-encoding", b"content-encoding", b"expect", b"origin", b"upgrade"})


class FastPathDispatch:
    """The fast-path part of CollectorHttpProtocol (api/protocol.py), in a file of its own. Besides its own
    state it uses the protocol's (below), `_next_request` and `close_lingering` (api/closing.py), and uvicorn's
    (docs/http.md lists what of uvicorn's the protocol relies on)."""

    limits: ConnectionLimits
    head_room: int | None
    raw_transport: asyncio.Transport
    close_at: float | None
    _answered_one: bool
    _lingering: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The fast path's handler, or None when off (set as the connection is made); the body of the request
        # it is reading (None: not reading one); whether that request keeps the connection; whether its answer
        # is still awaited (a durable commit), with reading paused and later requests queued behind it.
        self.fast: FastIngest | None = None
        self._fast_body: list[bytes] | None = None
        self._fast_keep_alive = True
        self._fast_waiting = False
        # The head's headers by name, made once it is complete (the last of a repeated name wins, as in the
        # pipeline's view of them): the fast path hands it on rather than have the pipeline make it again.
        self.head: dict[bytes, bytes] = {}

    def connection_lost(self, exc: Exception | None) -> None:
        if self._fast_body is not None:
            # The client left before the end of its body: the request never happened, nothing is kept.
            self._fast_body = None
            self.close_at = None
            refused("aborted")
        super().connection_lost(exc)  # type: ignore[misc]

    def on_message_begin(self) -> None:
        # uvicorn builds the ASGI scope here; a fast-path request never needs one, so it is built in
        # _dispatch, for the requests that go to the app.
        self.url = b""
        self.expect_100_continue = False
        self.headers: list[tuple[bytes, bytes]] = []

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called for every header of every request: only kept here, and looked at once the head is complete.
        self.headers.append((name.lower(), value))

    def _dispatch(self) -> None:
        """A complete head within the limits: its body is read for the fast path when the fast path answers it
        the same as the app would (a single-event POST /events: docs/http.md), else uvicorn's ASGI cycle
        takes the request. One method, the cheapest tests first: this runs for every request."""
        fast = self.fast
        self.head = head = dict(self.headers)
        # One Content-Length at most: llhttp refuses a head with two (tests/unit/test_protocol.py holds it).
        length = head.get(b"content-length")
        if (fast is not None and self.url == EVENTS_PATH and _ASGI_HEADERS.isdisjoint(head) and length is not None
                and length.isdigit() and int(length) <= MAX_FAST_BODY_BYTES
                # Answers go out in order: nothing may be waiting for one.
                and not self._fast_waiting and not self.pipeline
                and (self.cycle is None or self.cycle.response_complete)):
            parser = self.parser
            keep_alive = parser.should_keep_alive()
            # httptools formats the version as a string for every call. Without a Connection header, only
            # HTTP/1.1 keeps the connection (llhttp: HTTP/1.0 needs `Connection: keep-alive`, and it refuses
            # versions other than 0.9, 1.0, 1.1 and 2.0), so the usual request is told without asking.
            http_1_1 = (keep_alive and b"connection" not in head) or parser.get_http_version() == "1.1"
            if parser.get_method() == b"POST" and http_1_1 and not parser.should_upgrade() and fast.collector.accepting:
                self._fast_body = []
                self._fast_keep_alive = keep_alive
                self.close_at = self.loop.time() + fast.body_read_timeout_seconds
                return
        if b"expect" in head:  # uvicorn's on_header notes this for the ASGI cycle
            self.expect_100_continue = any(name == b"expect" and value.lower() == b"100-continue"
                                           for name, value in self.headers)
        # Counted before any request the app answers, so that /metrics includes every earlier answer.
        TALLY.flush()
        self.scope = self._new_scope()
        super().on_headers_complete()  # type: ignore[misc] - uvicorn's: the rest of the scope, the cycle, its task

    def _new_scope(self) -> dict[str, Any]:
        """uvicorn's scope of the request whose head was parsed (HttpToolsProtocol.on_message_begin's)."""
        return {"type": "http", "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
                "http_version": "1.1", "server": self.server, "client": self.client, "scheme": self.scheme,
                "root_path": self.root_path, "headers": self.headers, "state": self.app_state.copy()}

    def on_body(self, body: bytes) -> None:
        if self._fast_body is not None:
            self._fast_body.append(body)
        else:
            super().on_body(body)  # type: ignore[misc]

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if self._fast_waiting:
            # A fast-path answer is still to be written: this one goes after it.
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))
        else:
            super()._start_asgi_task(cycle, app)  # type: ignore[misc]

    def on_message_complete(self) -> None:
        self.head_room = self.limits.max_header_bytes  # the next head's (api/protocol.py)
        chunks = self._fast_body
        if chunks is None:
            # uvicorn's on_message_complete, inlined.
            cycle = self.cycle
            if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
                return
            cycle.more_body = False
            cycle.message_event.set()
            return
        # The fast-path request's body is complete: hand it over.
        body = b"".join(chunks)
        self._fast_body = None
        self.close_at = None
        self._fast_waiting = True
        try:
            self.fast.handle(  # type: ignore[union-attr]
                self.headers, self.head, self.client, body, self._fast_answered)
        except Exception:
            # A bug, not the client's fault: the 500 uvicorn gives an app that fails, not its 400 for a parser
            # callback that raised.
            log.exception("the fast path failed on a request")
            if self._fast_waiting:
                self._fast_answered(INTERNAL_ERROR)
        if self._fast_waiting:
            # Waiting for a commit: later requests on this connection wait too, so answers stay in order.
            self.flow.pause_reading()

    def _fast_body_late(self) -> None:
        """The body did not come within BODY_READ_TIMEOUT_SECONDS: the app's 408, and since the rest of the
        body is not awaited, the connection ends."""
        self._fast_body = None
        self._fast_keep_alive = False
        self._fast_answered(late_body_answer())

    def _fast_answered(self, whole: Answer) -> None:
        """Write a fast-path answer, then go on as after any response (on_response_complete)."""
        waited = self._fast_waiting
        self._fast_waiting = False
        TALLY.answered(self.loop)
        self.server_state.total_requests += 1
        self._answered_one = True
        transport = self.raw_transport
        if self._lingering or transport.is_closing():
            return
        encoded, keep_alive = encode(whole, self.server_state.default_headers, self._fast_keep_alive)
        transport.write(encoded)
        if not keep_alive:
            self.close_lingering()
            return
        if waited:
            self.flow.resume_reading()
        self._next_request()
