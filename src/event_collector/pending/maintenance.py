"""The SQLite store's upkeep (adoption, retention, the dead letters' bound, space) and the operator's tools.

Nearly all of it is work over many rows, done in chunks of a transaction each with a pause between two
(`_in_chunks`), so that it goes on beside the pipeline's writes in every process on the store. SqliteStore
offers it as its part of the PendingStore interface; the pipeline's part is in sqlite.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
from typing import Awaitable, Callable

from ..exceptions import StoreError
from . import journal, rows, schema
from .base import DeadLetter
from .engine import Engine
from .liveness import Liveness

log = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86_400
# The shortest pause between two chunks of maintenance: SQLite's busy handler tries again every 100 ms at
# most, so a pause this long lets every process waiting for the lock in.
_LEAST_PAUSE_SECONDS = 0.1
# Heartbeat files of owners silent this long are removed (their rows were adopted long ago).
_FORGET_OWNERS_AFTER_SECONDS = 86_400


class Maintenance:
    def __init__(self, engine: Engine, liveness: Liveness, *, owner: str, dead_letter_max_bytes: int,
                 clock: Callable[[], float]) -> None:
        self._engine = engine
        self._liveness = liveness
        self._owner = owner
        self._dead_letter_max_bytes = dead_letter_max_bytes
        self._clock = clock
        self._adopted_at = -math.inf

    # -- upkeep ----------------------------------------------------------------------------------

    async def adopt_orphans_now_and_then(self) -> None:
        """Adopt if a third of the owners' timeout has passed since the last adoption: a claim does this
        first, so that a dead process's rows are replayed without waiting for the janitor."""
        if self._clock() - self._adopted_at < self._liveness.timeout_seconds / 3:
            return
        try:
            await self.adopt_orphans()
        except StoreError as exc:  # the due rows go on draining; adoption is tried again next time
            log.warning("adopting the rows of stopped processes failed: %s", exc)

    async def adopt_orphans(self) -> int:
        self._adopted_at = self._clock()
        # Rows in the `in_flight` table come from a version before the journal.
        owners = (set(await self._engine.call(rows.lease_owners))
                  | set(await self._engine.call(rows.in_flight_owners)))
        dead = sorted(owner for owner in owners if not self._liveness.is_alive(owner))
        adopted = 0
        for owner in dead:
            adopted += await self._in_chunks(lambda c, owner=owner: rows.free_rows_of(c, owner))
            adopted += await self._in_chunks(lambda c, owner=owner: rows.adopt_in_flight(c, owner))
        for orphan in journal.orphans(self._engine.path, self._owner):
            try:
                adopted += await self._adopt_journal(orphan)
            finally:
                orphan.release()
            dead.append(os.path.basename(orphan.directory))
        if adopted:
            log.warning("adopted %d pending rows of %d processes that stopped beating; they are replayed now",
                        adopted, len(dead))
        self._liveness.forget_silent(_FORGET_OWNERS_AFTER_SECONDS)
        return adopted

    async def _adopt_journal(self, orphan: journal.Orphan) -> int:
        """Move a dead process's events not settled into the pending table, due as of when they were
        received, a segment at a time, CHUNK_ROWS per transaction; each segment is unlinked once its events
        are committed. A crash between the two copies the segment's events again: delivered twice, the same
        `_id`, answered 409."""
        moved = 0
        segments = await asyncio.get_running_loop().run_in_executor(
            None, lambda: list(journal.unsettled_events(orphan.directory)))
        for path, events in segments:
            for start in range(0, len(events), rows.CHUNK_ROWS):
                chunk = [rows.pending_row(e.envelope(), e.received_at, None, None)
                         for e in events[start:start + rows.CHUNK_ROWS]]
                await self._engine.write_alone(lambda c, chunk=chunk: rows.insert_pending(c, chunk))
                moved += len(chunk)
            os.unlink(path)
        orphan.remove()
        return moved

    async def expire_pending(self, older_than_days: float) -> int:
        now = self._clock()
        cutoff = now - older_than_days * _SECONDS_PER_DAY
        reason = f"expired: still undelivered after {older_than_days:g} days"
        return await self._in_chunks(lambda c: rows.expire(c, cutoff, reason, now))

    async def purge_dead_letters(self, older_than_days: float, reason: str | None = None) -> int:
        cutoff = self._clock() - older_than_days * _SECONDS_PER_DAY
        return await self._in_chunks(lambda c: rows.purge_dead_letters(c, cutoff, reason))

    async def trim_dead_letters(self) -> int:
        return await self._in_chunks(lambda c: rows.trim_dead_letters(c, self._dead_letter_max_bytes))

    async def reclaim_space(self) -> int:
        if not await self._engine.call(schema.worth_vacuuming):
            return 0
        given_back = await self._in_chunks(schema.vacuum_step, run=self._engine.call)
        await self._engine.call(schema.checkpoint)
        return given_back

    async def _in_chunks(self, chunk: Callable[[sqlite3.Connection], int],
                         run: Callable[[Callable], Awaitable[int]] | None = None) -> int:
        """Run `chunk` in transactions of its own (`engine.write_alone`, or `run`) until it does nothing;
        returns the sum of what it returned. After each chunk it leaves the store alone for as long as the
        chunk took, and at least _LEAST_PAUSE_SECONDS: maintenance never takes more than half the store's
        time, and other processes' writers get the lock between two chunks."""
        run = run or self._engine.write_alone
        loop = asyncio.get_running_loop()
        total = 0
        while True:
            started = loop.time()
            done = await run(chunk)
            if not done:
                return total
            total += done
            await asyncio.sleep(max(loop.time() - started, _LEAST_PAUSE_SECONDS))

    # -- the operator's tools --------------------------------------------------------------------

    async def make_all_due(self) -> int:
        return await self._in_chunks(rows.make_due)

    async def list_dead_letters(self, reason: str | None, limit: int) -> list[DeadLetter]:
        return await self._engine.call(lambda c: rows.list_dead_letters(c, reason, limit))

    async def requeue_dead_letters(self, reason: str | None) -> int:
        return await self._in_chunks(lambda c: rows.requeue_dead_letters(c, reason))
