"""Moves due pending rows back into the buffer, never past its capacity."""

from __future__ import annotations

import asyncio
import logging

from .. import metrics
from ..buffer import Buffer
from .base import PendingStore

log = logging.getLogger(__name__)


class Replayer:
    def __init__(self, store: PendingStore, buffer: Buffer, interval_seconds: float, chunk_size: int) -> None:
        self._store = store
        self._buffer = buffer
        self._interval_seconds = interval_seconds
        self._chunk_size = chunk_size
        self._overflowed = asyncio.Event()

    def overflowed(self) -> None:
        """Events went to the store because the buffer was full: replay them as soon as it has room,
        rather than a whole interval later."""
        self._overflowed.set()

    async def run(self) -> None:
        # Replay at once on start: rows a crashed process left behind should not wait a full interval.
        while True:
            try:
                await self.replay_due()
            except Exception:  # the replayer must outlive any one failure
                log.exception("replay failed, will try again")
            await self._next_round()

    async def _next_round(self) -> None:
        """Wait for the interval, or less once an overflow is waiting and half the buffer is free."""
        deadline = asyncio.get_running_loop().time() + self._interval_seconds
        try:
            await asyncio.wait_for(self._overflowed.wait(), self._interval_seconds)
        except TimeoutError:
            return
        self._overflowed.clear()
        loop = asyncio.get_running_loop()
        while self._buffer.free_space < self._buffer.capacity // 2 and loop.time() < deadline:
            await asyncio.sleep(0.1)

    async def replay_due(self) -> int:
        """Claim due rows into the buffer until none are due or the buffer is full; returns the count."""
        replayed = 0
        while not self._buffer.closed:
            free = self._buffer.free_space
            if free <= 0:
                break
            envelopes = await self._store.claim_due(min(free, self._chunk_size))
            if not envelopes:
                break
            taken = self._buffer.offer_many(envelopes)
            if taken < len(envelopes):
                await self._store.release(envelopes[taken:])
            replayed += taken
        if replayed:
            metrics.events_replayed.inc(replayed)
            log.info("replayed %d pending events", replayed)
        return replayed
