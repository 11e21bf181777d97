"""The SQLite pending store: one file (WAL) shared by every worker process and the operator's tools.

Its parts: `engine` (the thread, group commit, SQLite errors), `schema` (opening, migrations, recovery,
space), `rows` (the SQL), `liveness` (heartbeat files), `journal` (durable mode's events in flight, in
files of this process's own beside the store) and `reserve` (space kept for draining from a full disk).
This module decides what each call of the PendingStore interface does with them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
import time
import uuid
from typing import Any, Awaitable, Callable

from ..envelope import Envelope
from ..exceptions import StoreError, StoreFull
from ..retry import backoff_seconds
from . import copying, journal, rows, schema
from .base import DeadLetter, Failure, PendingStatistics
from .engine import Engine, Together, out_of_space
from .liveness import Liveness
from .reserve import Reserve

log = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86_400
# The shortest pause between two chunks of maintenance: SQLite's busy handler tries again every 100 ms at
# most, so a pause this long lets every process waiting for the lock in.
_LEAST_PAUSE_SECONDS = 0.1
# Heartbeat files of owners silent this long are removed (their rows were adopted long ago).
_FORGET_OWNERS_AFTER_SECONDS = 86_400
# How often the journal and the store's file are checked for removal (docs/delivery.md, "Store layout").
FILES_CHECK_SECONDS = 0.5
# While the reserve is missing, a process tries to make it again at most this often.
_RESERVE_RETRY_SECONDS = 1.0


class SqliteStore:
    def __init__(
        self,
        path: str,
        *,
        owner_timeout_seconds: float = 30.0,
        max_attempts: int = 20,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 600.0,
        max_bytes: int = 1 << 30,
        dead_letter_max_bytes: int = 256 << 20,
        synchronous: str = "NORMAL",
        journal_segment_bytes: int = journal.SEGMENT_BYTES,
        recover_damaged: bool = False,
        reserve_bytes: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.owner = uuid.uuid4().hex
        self._max_attempts = max_attempts
        self._backoff_base_seconds = backoff_base_seconds
        self._backoff_max_seconds = backoff_max_seconds
        self._max_bytes = max_bytes
        self._dead_letter_max_bytes = dead_letter_max_bytes
        self._synchronous = synchronous
        self._recover_damaged = recover_damaged
        self._clock = clock
        self._liveness = Liveness(path, self.owner, owner_timeout_seconds, clock)
        self.engine = Engine(path, refresh=self._read_byte_counts, replace=self._move_into_new_file)
        self.journal = journal.Journal(path, self.owner, sync=synchronous == "FULL",
                                       segment_bytes=journal_segment_bytes)
        self._files_watch: asyncio.Task | None = None
        self._log_lost_said = False
        # The pending and dead-letter documents' bytes over all processes, as of this one's last transaction
        # (kept by triggers), and the bytes of this process's own events in flight (in its journal). See
        # `backlog_bytes`.
        self._pending_bytes = 0
        self.dead_letter_bytes = 0
        self._in_flight_bytes = 0
        self._adopted_at = -math.inf
        # Space set aside on the volume for draining from a full disk (reserve.py): made at the first
        # `check_room`, spent by a claim or a delete of delivered rows that fails for want of space.
        self._reserve = Reserve(path, reserve_bytes)
        self._reserve_tried_at = -math.inf
        # Whether the reserve is held, as of this process's last look: `check_room` runs for every durable
        # request, so the file is looked at by the files watch (and by make and spend), not per request.
        self._reserve_held = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        await self.engine.open(lambda: schema.open_connection(self.path, synchronous=self._synchronous,
                                                              recover_damaged=self._recover_damaged))
        try:
            self.journal.open()
        except OSError as exc:
            await self.engine.close()
            raise StoreError(f"cannot open the in-flight journal {self.journal.directory}: {exc}") from exc
        self._liveness.start()
        self._files_watch = asyncio.create_task(self._watch_files(), name="store-files-watch")

    async def close(self) -> None:
        if self._files_watch is not None:
            self._files_watch.cancel()
            await asyncio.gather(self._files_watch, return_exceptions=True)
        try:
            await self.engine.close()
        finally:
            self.journal.close()
            self._liveness.stop()

    async def _watch_files(self) -> None:
        """The journal and the store's file, if someone removed them, are made whole within a check's
        interval, whether or not events arrive (an idle process, or one whose buffer is full and that
        writes only to SQLite, or one whose delivery is paused and that replays nothing)."""
        said = ""
        while True:
            await asyncio.sleep(FILES_CHECK_SECONDS)
            try:
                if self._reserve_held:  # another process may have spent it: noticed here, not per request
                    self._reserve_held = self._reserve.held
                self.journal.check()
                if self.engine.file_changed():  # using the connection moves its rows into the file at the path
                    await self.engine.call(lambda connection: None)
                elif self.engine.log_lost() and not self._log_lost_said:
                    self._log_lost_said = True
                    log.error("pending store %s: its write-ahead log was deleted or replaced while in use; every "
                              "commit is copied into the store's file at once from now on. Restart every process "
                              "using the store, together, to start a new log", self.path)
                    await self.engine.copy_every_commit()
            except Exception as exc:  # the watch must outlive any one failure, or removals go unnoticed
                if str(exc) != said:  # said once, not every half second
                    log.error("checking the pending store's files failed: %s", exc)
                said = str(exc)

    @property
    def backlog_bytes(self) -> int:
        """What PENDING_MAX_BYTES caps: the pending table's documents, every process's, plus the documents
        this process holds in flight. Another live process's rows in flight are left out (they are events in
        its memory, bounded by its share of QUEUE_CAPACITY, and counted by it); a dead process's are counted
        by all once adopted into the pending table."""
        return self._pending_bytes + self._in_flight_bytes

    def _read_byte_counts(self, connection: sqlite3.Connection) -> None:
        self._pending_bytes, self.dead_letter_bytes = rows.byte_counts(connection)

    def _settled(self, envelopes: list[Envelope]) -> None:
        """These envelopes left the journal, kept elsewhere or delivered: no longer ours to count."""
        settled = [e for e in envelopes if rows.is_in_flight(e.pending_id)]
        self.journal.settle([-e.pending_id for e in settled])
        self._in_flight_bytes -= sum(len(e.document) for e in settled)

    def _move_into_new_file(self, old: sqlite3.Connection) -> sqlite3.Connection:
        return copying.move_into_new_file(old, self.path, self._synchronous, self._liveness)

    # -- the pipeline ----------------------------------------------------------------------------

    def check_room(self) -> None:
        """Raise StoreFull when the backlog is at PENDING_MAX_BYTES, or while the volume has no room for the
        reserve that lets a backlog drain from a full disk: new events are refused, never dropped."""
        if self.backlog_bytes >= self._max_bytes:
            raise StoreFull(f"the pending backlog is at its cap of {self._max_bytes} bytes (PENDING_MAX_BYTES)")
        if not self._reserve_held and not self._make_reserve():
            raise StoreFull(f"the pending store's volume has no room for the {self._reserve.size_bytes} bytes it "
                            f"keeps for draining from a full disk (PENDING_RESERVE_BYTES, {self._reserve.path}): "
                            "new events are refused until it has room for them twice over")

    def _make_reserve(self) -> bool:
        now = self._clock()
        if now - self._reserve_tried_at < _RESERVE_RETRY_SECONDS:
            return False
        self._reserve_tried_at = now
        self._reserve_held = self._reserve.make()
        return self._reserve_held

    async def add(self, envelopes: list[Envelope], *, leased: bool, enforce_cap: bool = True) -> None:
        if not envelopes:
            return
        if enforce_cap:
            self.check_room()
        if leased:  # in flight: durable mode's every accepted event, appended to this process's journal
            seqs = self.journal.write_events(envelopes)
            durable = self.journal.wait_until_durable()
            if durable is not None:
                try:
                    await durable
                except StoreError:
                    self.journal.settle(seqs)  # never answered 2xx: the client sends them again
                    raise
            self._in_flight_bytes += sum(len(envelope.document) for envelope in envelopes)
            for envelope, seq in zip(envelopes, seqs):
                envelope.pending_id = -seq
            return
        else:
            now = self._clock()
            new_rows = [rows.pending_row(envelope, now, None, None) for envelope in envelopes]
            ids = await self.engine.write(Together(rows.insert_pending_together, new_rows))
        for envelope, row_id in zip(envelopes, ids):
            envelope.pending_id = row_id

    async def delivered(self, envelopes: list[Envelope]) -> None:
        pending = [(e.pending_id, e.log_id) for e in envelopes
                   if e.pending_id is not None and not rows.is_in_flight(e.pending_id)]
        # The journal's events are settled whatever happens to the SQL: a failed delete leaves rows to be
        # replayed (answered 409), but an event left unsettled would pin its segment for good.
        self._settled(envelopes)
        if pending:
            await self._write_to_drain(lambda c: rows.delete_pending(c, pending))

    async def retry_later(self, failures: list[Failure], *, count_attempt: bool) -> None:
        if not failures:
            return
        now = self._clock()
        exhausted: list[Failure] = []
        waiting: list[Failure] = []
        for failure in failures:
            if count_attempt:
                failure.envelope.attempts += 1
            if failure.envelope.attempts >= self._max_attempts:
                reason = f"gave up after {failure.envelope.attempts} attempts: {failure.reason}"
                exhausted.append(Failure(failure.envelope, reason))
            else:
                waiting.append(failure)

        new = [f for f in waiting if f.envelope.pending_id is None]
        new_rows = [rows.pending_row(f.envelope, now + self._backoff_seconds(f.envelope.attempts), None, f.reason)
                    for f in new]
        stored = [f for f in waiting if f.envelope.pending_id is not None]
        updates = [(f.envelope.attempts, now + self._backoff_seconds(f.envelope.attempts), f.reason,
                    f.envelope.pending_id, f.envelope.log_id)
                   for f in stored if not rows.is_in_flight(f.envelope.pending_id)]
        # An event in flight that must wait moves to the pending table, where retries are kept.
        moves = [rows.pending_row(f.envelope, now + self._backoff_seconds(f.envelope.attempts), None, f.reason)
                 for f in stored if rows.is_in_flight(f.envelope.pending_id)]

        def keep(connection: sqlite3.Connection) -> range | None:
            rows.keep_for_retry(connection, updates, self.owner)
            if moves:
                rows.insert_pending(connection, moves)
            rows.dead_letter_failures(connection, exhausted, self.owner, now)
            return rows.insert_pending(connection, new_rows) if new_rows else None

        ids = await self.engine.write(keep)
        self._settled([f.envelope for f in failures])
        for failure, row_id in zip(new, ids or ()):
            failure.envelope.pending_id = row_id

    def _backoff_seconds(self, attempts: int) -> float:
        return backoff_seconds(attempts, self._backoff_base_seconds, self._backoff_max_seconds)

    async def dead_letter(self, failures: list[Failure]) -> None:
        if failures:
            now = self._clock()
            await self.engine.write(lambda c: rows.dead_letter_failures(c, failures, self.owner, now))
            self._settled([f.envelope for f in failures])

    async def release(self, envelopes: list[Envelope]) -> None:
        keys = [(e.pending_id, e.log_id) for e in envelopes
                if e.pending_id is not None and not rows.is_in_flight(e.pending_id)]
        now = self._clock()
        # Events in flight move to the pending table, due now, for the replayer.
        moves = [rows.pending_row(e, now, None, None) for e in envelopes if rows.is_in_flight(e.pending_id)]

        def release(connection: sqlite3.Connection) -> None:
            rows.release(connection, keys, self.owner)
            if moves:
                rows.insert_pending(connection, moves)

        if keys or moves:
            await self.engine.write(release)
            self._settled(envelopes)

    async def claim_due(self, limit: int) -> list[Envelope]:
        if limit <= 0:
            return []
        if self._clock() - self._adopted_at >= self._liveness.timeout_seconds / 3:
            try:
                await self.adopt_orphans()
            except StoreError as exc:  # the due rows go on draining; adoption is tried again next time
                log.warning("adopting the rows of stopped processes failed: %s", exc)
        now = self._clock()
        return await self._write_to_drain(lambda c: rows.claim(c, self.owner, now, limit))

    async def _write_to_drain(self, operation: Callable[[sqlite3.Connection], Any]) -> Any:
        """A write that drains the backlog: a claim, or the delete of delivered rows (which, failed, would
        leave them leased to this process for as long as it lives). When it fails for want of space, the
        reserve is spent on it (reserve.py) and it runs again, in a transaction of its own."""
        try:
            return await self.engine.write(operation)
        except StoreError as exc:
            if not out_of_space(exc):
                raise
            await self._spend_reserve(exc)
        return await self.engine.write_alone(operation)

    async def _spend_reserve(self, cause: StoreError) -> None:
        self._reserve_held = False
        if self._reserve.spend():
            log.error("the pending store's volume is full (%s): gave the %d bytes set aside in %s back to it for "
                      "the backlog to drain; new events that must be stored are refused until it has room for "
                      "them twice over", cause, self._reserve.size_bytes, self._reserve.path)
        try:
            # The log's pages go into the file now, with the space just freed, so that it starts over from
            # its beginning rather than grows.
            await self.engine.call(schema.checkpoint)
        except StoreError as exc:
            log.error("pending store %s: copying the write-ahead log into the file failed: %s", self.path, exc)

    async def statistics(self) -> PendingStatistics:
        """The pending table's rows and every process's events in flight (read from the journals)."""
        stored = await self.engine.call(rows.statistics)
        flying = await asyncio.get_running_loop().run_in_executor(None, self._journal_statistics)
        return stored.with_in_flight(*flying)

    def _journal_statistics(self) -> tuple[int, int, float | None]:
        events = [event for directory in journal.journal_directories(self.path)
                  for _, segment in journal.unsettled_events(directory) for event in segment]
        return (len(events), sum(len(e.document) for e in events),
                min((e.received_at for e in events), default=None))

    # -- upkeep ----------------------------------------------------------------------------------

    async def adopt_orphans(self) -> int:
        self._adopted_at = self._clock()
        # Rows in the `in_flight` table come from a version before the journal.
        owners = set(await self.engine.call(rows.lease_owners)) | set(await self.engine.call(rows.in_flight_owners))
        dead = sorted(owner for owner in owners if not self._liveness.is_alive(owner))
        adopted = 0
        for owner in dead:
            adopted += await self._in_chunks(lambda c, owner=owner: rows.free_rows_of(c, owner))
            adopted += await self._in_chunks(lambda c, owner=owner: rows.adopt_in_flight(c, owner))
        for orphan in journal.orphans(self.path, self.owner):
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
                await self.engine.write_alone(lambda c, chunk=chunk: rows.insert_pending(c, chunk))
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
        if not await self.engine.call(schema.worth_vacuuming):
            return 0
        given_back = await self._in_chunks(schema.vacuum_step, run=self.engine.call)
        await self.engine.call(schema.checkpoint)
        return given_back

    async def _in_chunks(self, chunk: Callable[[sqlite3.Connection], int],
                         run: Callable[[Callable], Awaitable[int]] | None = None) -> int:
        """Run `chunk` in transactions of its own (`engine.write_alone`, or `run`) until it does nothing;
        returns the sum of what it returned. After each chunk it leaves the store alone for as long as the
        chunk took, and at least _LEAST_PAUSE_SECONDS: maintenance never takes more than half the store's
        time, and other processes' writers get the lock between two chunks."""
        run = run or self.engine.write_alone
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
        return await self.engine.call(lambda c: rows.list_dead_letters(c, reason, limit))

    async def requeue_dead_letters(self, reason: str | None) -> int:
        return await self._in_chunks(lambda c: rows.requeue_dead_letters(c, reason))


async def statistics_read_only(path: str) -> PendingStatistics:
    """The figures of the store at `path`, read on a read-only connection: nothing is written (no migration,
    no journal of its own, no heartbeat), so that they can be read from a full disk or a read-only mount."""
    store = SqliteStore(path)
    await store.engine.open(lambda: schema.open_read_only(path))
    try:
        return await store.statistics()
    finally:
        await store.engine.close()
