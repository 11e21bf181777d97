"""One batcher cuts the buffer into batches for BULK_WORKERS senders, as Vector's sinks do.

A batch is cut only when a sender is free to take it: while all of them are busy, events gather in the
buffer, so a busy pipeline sends full batches and a quiet one sends what it has every flush interval.
(Shippers that each waited on the buffer woke as a herd on every event and sent tiny bulks.)
"""

from __future__ import annotations

import asyncio

from ..buffer import Buffer
from ..envelope import Envelope


class Batcher:
    def __init__(self, buffer: Buffer, senders: int, flush_interval_seconds: float) -> None:
        self._buffer = buffer
        self._senders = senders
        self._flush_interval_seconds = flush_interval_seconds
        self._free_senders = asyncio.Semaphore(senders)
        # Batches for the senders; None tells a sender that the buffer is closed and empty.
        self.ready: asyncio.Queue[list[Envelope] | None] = asyncio.Queue()

    def take_ready(self) -> list[Envelope]:
        """The events of batches cut but not taken by any sender yet (at a stop, so they are kept)."""
        events: list[Envelope] = []
        while not self.ready.empty():
            events += self.ready.get_nowait() or []
        return events

    def sender_free(self) -> None:
        self._free_senders.release()

    async def run(self) -> None:
        while True:
            await self._free_senders.acquire()
            batch = await self._buffer.next_batch(self._flush_interval_seconds)
            if batch:
                self.ready.put_nowait(batch)
                continue
            self._free_senders.release()
            if self._buffer.closed:
                for _ in range(self._senders):
                    self.ready.put_nowait(None)
                return
