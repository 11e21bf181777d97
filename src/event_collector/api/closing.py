"""How a connection ends: closed the way nginx closes it ("lingering close"), and by one sweep per server once
its time is up.

Closing a connection with bytes of the client's unread makes the kernel answer with a reset, and the client
loses the answer it was sent (a 413, a 431). So the answer is sent, the write side shut, and what the client
still sends is read and dropped, for a bounded time and size, until it closes. Every deadline of a connection
(its request head, a fast-path body, the end of lingering) is its `close_at`, checked by one periodic task
per server rather than a timer per request.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl

# A lingering close reads and drops at most this much, for at most this long (nginx: lingering_time 30 s):
# enough for a client to finish sending a body it was refused for and read the answer.
LINGER_SECONDS = 5.0
LINGER_BYTES = 16 * 1024 * 1024


class LingeringClose:
    """The closing part of CollectorHttpProtocol (api/protocol.py), in a file of its own. It uses the
    protocol's `raw_transport`, `close_at` and `_reading_requests`, and uvicorn's `flow` and `loop`."""

    raw_transport: asyncio.Transport
    close_at: float | None
    _reading_requests: bool
    flow: FlowControl
    loop: asyncio.AbstractEventLoop

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lingering = False
        self._discard_room = LINGER_BYTES
        # The server stops: a close is a close, nothing lingers any more.
        self._shutting_down = False

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

    def _discard(self, size: int) -> None:
        """`size` bytes the client sent once requests are no longer read: dropped, up to LINGER_BYTES."""
        self._discard_room -= size
        if self._discard_room < 0:
            self._close_now()

    def _close_now(self) -> None:
        self._reading_requests = False
        self.close_at = None
        self.raw_transport.close()


class LingeringTransport:
    """The transport as uvicorn's request cycle sees it: its close() lingers, and the connection counts as
    closing once it stopped reading requests. Hot methods are the real transport's own bound methods."""

    def __init__(self, transport: asyncio.Transport, protocol: Any) -> None:
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


class ConnectionSweeper:
    """Calls `overdue()` on the connections whose `close_at` has passed, every quarter of the head timeout
    (at most every second), while the server has connections: one task per server, not a timer per request."""

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
