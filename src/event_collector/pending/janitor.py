"""Keeps the pending store healthy over time: heartbeats, retention, and giving space back."""

from __future__ import annotations

import asyncio
import logging

from . import maintenance
from .sqlite import SqliteStore

log = logging.getLogger(__name__)


class Janitor:
    def __init__(self, store: SqliteStore, *, interval_seconds: float, heartbeat_seconds: float,
                 pending_retention_days: float, dead_letter_retention_days: float) -> None:
        self._store = store
        self._interval_seconds = interval_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._pending_retention_days = pending_retention_days
        self._dead_letter_retention_days = dead_letter_retention_days

    async def run_heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            try:
                await self._store.heartbeat()
            except Exception:  # the heartbeat must outlive any one failure, or this process's leases lapse
                log.exception("heartbeat failed")

    async def run(self) -> None:
        while True:
            try:
                await self.tidy()
            except Exception:
                log.exception("pending store upkeep failed, will try again")
            await asyncio.sleep(self._interval_seconds)

    async def tidy(self) -> None:
        store = self._store
        expired = await store.run(maintenance.expire_pending(self._pending_retention_days))
        if expired:
            log.warning("%d pending events older than %g days moved to dead-letter as expired",
                        expired, self._pending_retention_days)
        purged = await store.run(maintenance.purge_dead_letters(self._dead_letter_retention_days))
        if purged:
            log.info("deleted %d dead-letter events older than %g days", purged, self._dead_letter_retention_days)
        await store.run(maintenance.forget_silent_owners(older_than_seconds=86_400))
        if await store.reclaim_space():
            log.info("pending store gave space back: now %d bytes in use", store.used_bytes)
