"""One batcher cuts the buffer into batches for BULK_WORKERS senders, as Vector's sinks do.

A batch is cut only when a sender is free to take it: while any bulk is in flight, events gather in the
buffer up to a full batch or the flush interval, so a busy pipeline sends full batches. When every sender
is idle there is nothing to gain by waiting: what the buffer holds goes after BULK_LINGER_SECONDS, so a
quiet pipeline delivers within a fraction of a second instead of a whole flush interval.
(Shippers that each waited on the buffer woke as a herd on every event and sent tiny bulks.)

How many batches may be out at once is the concurrency controller's limit (shipper/concurrency.py), at
most one per sender: while OpenSearch is slow to answer, fewer and fuller bulks go.
"""

from __future__ import annotations

import asyncio

from ..buffer import Buffer
from ..envelope import Envelope
from .concurrency import AdaptiveConcurrency


class Batcher:
    def __init__(self, buffer: Buffer, senders: int, flush_interval_seconds: float,
                 linger_seconds: float | None = None, concurrency: AdaptiveConcurrency | None = None) -> None:
        self._buffer = buffer
        self._senders = senders
        self._flush_interval_seconds = flush_interval_seconds
        # A linger as long as the flush interval turns it off: partial batches wait the whole interval.
        linger = flush_interval_seconds if linger_seconds is None else linger_seconds
        self._linger_seconds = min(linger, flush_interval_seconds)
        # Without a controller every sender may send at once.
        self.concurrency = concurrency or AdaptiveConcurrency(senders, adaptive=False)
        self.concurrency.bound(senders)
        # Set whenever a batch is settled: there may be room for the next one.
        self._room = asyncio.Event()
        # Batches cut and not settled yet (queued or with a sender): none means every sender is idle.
        self._outstanding = 0
        # Batches for the senders; None tells a sender that the buffer is closed and empty.
        self.ready: asyncio.Queue[list[Envelope] | None] = asyncio.Queue()

    def take_ready(self) -> list[Envelope]:
        """The events of batches cut but not taken by any sender yet (at a stop, so they are kept)."""
        events: list[Envelope] = []
        while not self.ready.empty():
            events += self.ready.get_nowait() or []
        return events

    def sender_free(self) -> None:
        self._outstanding -= 1
        self._room.set()

    async def _wait_for_room(self) -> None:
        while self._outstanding >= self.concurrency.limit:
            self._room.clear()
            await self._room.wait()

    async def run(self) -> None:
        while True:
            await self._wait_for_room()
            batch = await self._next_batch()
            if batch:
                self._outstanding += 1
                self.concurrency.started(self._outstanding)
                self.ready.put_nowait(batch)
                continue
            if self._buffer.closed:
                for _ in range(self._senders):
                    self.ready.put_nowait(None)
                return

    async def _next_batch(self) -> list[Envelope]:
        """A full batch as soon as there is one; otherwise what the buffer holds once every sender is idle
        at the end of a linger, or at the end of the flush interval whatever the senders do."""
        if self._linger_seconds >= self._flush_interval_seconds:
            return await self._buffer.next_batch(self._flush_interval_seconds)
        loop = asyncio.get_running_loop()
        flush_at = loop.time() + self._flush_interval_seconds
        while True:
            wait = min(self._linger_seconds, flush_at - loop.time())
            batch = await self._buffer.next_batch(max(wait, 0.0), take_partial=False)
            if batch or self._buffer.closed:
                return batch or self._buffer.take_batch()
            if (self._outstanding == 0 and len(self._buffer)) or loop.time() >= flush_at:
                return self._buffer.take_batch()
