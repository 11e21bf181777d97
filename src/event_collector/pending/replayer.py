"""Moves due pending rows back into the buffer, never past its capacity, and only while OpenSearch takes
requests: during an outage the rows wait where they are, unwritten, and the moment the breaker closes the
backlog is replayed, not at the next interval."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .. import metrics
from ..buffer import Buffer
from ..envelope import Envelope
from ..exceptions import StoreError
from ..retry import Breaker
from .base import PendingStore

log = logging.getLogger(__name__)


class Replayer:
    def __init__(self, store: PendingStore, buffer: Buffer, breaker: Breaker, interval_seconds: float,
                 chunk_size: int) -> None:
        self._store = store
        self._buffer = buffer
        self._breaker = breaker
        self._interval_seconds = interval_seconds
        self._chunk_size = chunk_size
        self._wake = asyncio.Event()
        # Stored events leased to this process that could not be released: offered before any claim.
        self._held: deque[Envelope] = deque()
        # Whether the last round stopped because the buffer was full rather than because nothing was due.
        self._buffer_filled = False

    def overflowed(self) -> None:
        """Events went to the store because the buffer was full: replay them as soon as it has room,
        rather than a whole interval later."""
        self._wake.set()

    def hold(self, envelopes: list[Envelope]) -> None:
        self._held.extend(envelopes)
        self._wake.set()

    def release_held(self) -> list[Envelope]:
        held = list(self._held)
        self._held.clear()
        return held

    async def run(self) -> None:
        # Replay at once on start: rows a crashed process left behind should not wait a full interval.
        while True:
            await self._breaker.wait_closed()
            try:
                await self.replay_due()
            except Exception:  # the replayer must outlive any one failure
                log.exception("replay failed, will try again")
            if self._buffer_filled:
                # More is due than the buffer could take: go on as soon as half of it is free again.
                await self._half_free()
            else:
                await self._next_round()

    async def _next_round(self) -> None:
        """Wait for the interval, or less: when the breaker closes after an outage, or once an overflow
        is waiting and half the buffer is free."""
        recovered = asyncio.ensure_future(self._breaker.recovered.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({recovered, woken}, timeout=self._interval_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            recovered.cancel()
            woken.cancel()
        if recovered in done:
            self._breaker.recovered.clear()
            return
        if not done:
            return
        self._wake.clear()
        await self._half_free()

    async def _half_free(self) -> None:
        """Wait until half the buffer is free, or one interval at most."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._interval_seconds
        # Always one pause at least, so that a full tiny buffer never turns this into a busy loop.
        await asyncio.sleep(0.1)
        while self._buffer.free_space < max(1, self._buffer.capacity // 2) and loop.time() < deadline:
            await asyncio.sleep(0.1)

    async def replay_due(self) -> int:
        """Claim due rows into the buffer until none are due or the buffer is full; returns the count."""
        replayed = self._offer_held()
        self._buffer_filled = False
        while not self._buffer.closed and not self._breaker.is_open:
            free = self._buffer.free_space
            if free <= 0:
                self._buffer_filled = True
                break
            envelopes = await self._store.claim_due(min(free, self._chunk_size))
            if not envelopes:
                break
            taken = self._buffer.offer_many(envelopes)
            if taken < len(envelopes):
                self._buffer_filled = True
                try:
                    await self._store.release(envelopes[taken:])
                except StoreError:
                    self.hold(envelopes[taken:])  # leased to this live process: keep them in hand
                    raise
            replayed += taken
        if replayed:
            metrics.events_replayed.inc(replayed)
            log.info("replayed %d pending events", replayed)
        return replayed

    def _offer_held(self) -> int:
        taken = 0
        while self._held and self._buffer.offer(self._held[0]):
            self._held.popleft()
            taken += 1
        return taken
