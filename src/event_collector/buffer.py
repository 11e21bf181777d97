"""The bounded in-memory buffer between the HTTP handlers and the shippers.

Capacity is fixed (QUEUE_CAPACITY). When it is full, `offer` refuses instead of waiting: the handler
then writes the event to the pending store and answers "pending", so a slow OpenSearch never makes
clients wait. Shippers take batches of up to `bulk_size` events, or whatever is there once their
flush interval has passed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from .envelope import Envelope


@dataclass(frozen=True)
class BufferStatistics:
    capacity: int
    size: int
    accepted_total: int
    refused_total: int


class Buffer:
    def __init__(self, capacity: int, batch_size: int, batch_max_bytes: int = 16 * 1024 * 1024) -> None:
        self.capacity = capacity
        self._batch_size = batch_size
        self.batch_max_bytes = batch_max_bytes
        self._items: deque[Envelope] = deque()
        self._batch_ready = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._closed = False
        self._accepted_total = 0
        self._refused_total = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def free_space(self) -> int:
        return self.capacity - len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, envelope: Envelope) -> bool:
        """Add one envelope; False when the buffer is full or closed (the caller keeps the event)."""
        if self._closed or len(self._items) >= self.capacity:
            self._refused_total += 1
            return False
        self._items.append(envelope)
        self._accepted_total += 1
        if len(self._items) >= self._batch_size:
            self._batch_ready.set()
        return True

    def offer_many(self, envelopes: list[Envelope]) -> int:
        """Add as many as fit, in order; returns how many were taken."""
        taken = 0
        for envelope in envelopes:
            if not self.offer(envelope):
                break
            taken += 1
        return taken

    async def next_batch(self, flush_interval_seconds: float, take_partial: bool = True) -> list[Envelope]:
        """Wait for a full batch or the flush interval, then take up to one batch (maybe empty; with
        `take_partial` False, empty unless a full batch is there or the buffer is closed).

        Once the buffer is closed it returns at once, so shippers drain what is left.
        """
        if not self._closed and len(self._items) < self._batch_size:
            try:
                await asyncio.wait_for(self._batch_ready.wait(), flush_interval_seconds)
            except TimeoutError:
                if not take_partial:
                    return []
        return self.take(self._batch_size)

    def take_batch(self) -> list[Envelope]:
        """Up to one batch of what is there now, without waiting."""
        return self.take(self._batch_size)

    def take(self, limit: int) -> list[Envelope]:
        items = self._items
        popleft = items.popleft
        batch = [popleft() for _ in range(min(limit, len(items)))]
        if sum([len(envelope.document) for envelope in batch]) > self.batch_max_bytes:
            # Rare (large documents): keep what fits, at least one, and give the rest back in order.
            batch_bytes, fits = 0, 0
            for envelope in batch:
                batch_bytes += len(envelope.document)
                if fits and batch_bytes > self.batch_max_bytes:
                    break
                fits += 1
            items.extendleft(reversed(batch[fits:]))
            del batch[fits:]
        if len(items) < self._batch_size and not self._closed:
            self._batch_ready.clear()
        return batch

    def close(self) -> None:
        """Refuse new events and wake every waiting shipper so it drains what is left."""
        self._closed = True
        self._batch_ready.set()
        self._closed_event.set()

    async def wait_closed(self, timeout_seconds: float) -> None:
        """Wait until the buffer is closed, or `timeout_seconds` at most."""
        try:
            await asyncio.wait_for(self._closed_event.wait(), timeout_seconds)
        except TimeoutError:
            pass

    def drain(self) -> list[Envelope]:
        items = list(self._items)
        self._items.clear()
        return items

    def oldest_received_at(self) -> float | None:
        """When the event at the head was received: the oldest, as events are taken in order (a replayed row
        joins at the tail with its first time of receipt, and may be older)."""
        return self._items[0].received_at if self._items else None

    def statistics(self) -> BufferStatistics:
        return BufferStatistics(self.capacity, len(self._items), self._accepted_total, self._refused_total)
