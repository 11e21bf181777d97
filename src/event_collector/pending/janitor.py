"""Keeps the pending store healthy over time: adoption, retention, the dead letters' bound, space.

One process per store runs it (`Collector(runs_janitor=...)`). It uses nothing but the PendingStore
interface, and each step works in short transactions, so the pipeline's writes go on while it runs.
Liveness (the heartbeat) is the store's own, in every process: see `liveness.py`.
"""

from __future__ import annotations

import asyncio
import logging

from .. import metrics
from .base import PendingStore

log = logging.getLogger(__name__)


class Janitor:
    def __init__(self, store: PendingStore, *, interval_seconds: float, pending_retention_days: float,
                 dead_letter_retention_days: float) -> None:
        self._store = store
        self._interval_seconds = interval_seconds
        self._pending_retention_days = pending_retention_days
        self._dead_letter_retention_days = dead_letter_retention_days

    async def run(self) -> None:
        while True:
            try:
                await self.tidy()
            except Exception:
                log.exception("pending store upkeep failed, will try again")
            await asyncio.sleep(self._interval_seconds)

    async def tidy(self) -> None:
        store = self._store
        await store.adopt_orphans()
        expired = await store.expire_pending(self._pending_retention_days)
        if expired:
            metrics.dead_letters.labels("expired").inc(expired)
            log.warning("%d pending events older than %g days moved to dead-letter as expired",
                        expired, self._pending_retention_days)
        purged = await store.purge_dead_letters(self._dead_letter_retention_days)
        if purged:
            log.info("deleted %d dead-letter events older than %g days", purged, self._dead_letter_retention_days)
        dropped = await store.trim_dead_letters()
        if dropped:
            metrics.dead_letters_dropped.inc(dropped)
            log.warning("dropped the %d oldest dead letters to keep them under DEAD_LETTER_MAX_BYTES", dropped)
        given_back = await store.reclaim_space()
        if given_back:
            log.info("pending store gave %d bytes of free space back", given_back)
