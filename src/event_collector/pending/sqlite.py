"""The SQLite pending store: one file (WAL) shared by every worker process and the operator's tools.

Its parts: `engine` (the thread, group commit, SQLite errors), `schema` (opening, migrations, recovery,
space), `rows` (the SQL), `liveness` (heartbeat files), `journal` (durable mode's events in flight, in
files of this process's own beside the store), `reserve` (space kept for draining from a full disk),
`files_watch` and `copying` (files removed or replaced while in use), `statistics` (the figures) and
`maintenance` (upkeep and the operator's tools). This module decides what each call of the pipeline's part
of the PendingStore interface does with them, and hands the rest to `maintenance`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from typing import Any, Callable

from .. import metrics
from ..envelope import Envelope
from ..exceptions import StoreError, StoreFull
from ..retry import backoff_seconds
from . import copying, journal, lookup, rows, schema, statistics
from .base import DeadLetter, Failure, PendingStatistics
from .engine import Engine, Together, out_of_space
from .files_watch import watch_files
from .liveness import Liveness
from .maintenance import Maintenance
from .reserve import HeldReserve, Reserve

log = logging.getLogger(__name__)


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
        self._synchronous = synchronous
        self._recover_damaged = recover_damaged
        self._clock = clock
        self._liveness = Liveness(path, self.owner, owner_timeout_seconds, clock)
        self.engine = Engine(path, refresh=self._read_byte_counts, replace=self._move_into_new_file)
        self.journal = journal.Journal(path, self.owner, sync=synchronous == "FULL",
                                       segment_bytes=journal_segment_bytes)
        self._files_watch: asyncio.Task | None = None
        # The pending and dead-letter documents' bytes over all processes, as of this one's last transaction
        # (kept by triggers), and the bytes of this process's own events in flight (in its journal). See
        # `backlog_bytes`.
        self._pending_bytes = 0
        self.dead_letter_bytes = 0
        self._in_flight_bytes = 0
        # Space set aside on the volume for draining from a full disk (reserve.py): made at the first
        # `check_room`, spent by a claim or a delete of delivered rows that fails for want of space.
        self._reserve = HeldReserve(Reserve(path, reserve_bytes), clock)
        self._maintenance = Maintenance(self.engine, self._liveness, owner=self.owner,
                                        dead_letter_max_bytes=dead_letter_max_bytes, clock=clock)

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
        self._files_watch = asyncio.create_task(watch_files(self.engine, self.journal, self._reserve),
                                                name="store-files-watch")

    async def close(self) -> None:
        if self._files_watch is not None:
            self._files_watch.cancel()
            await asyncio.gather(self._files_watch, return_exceptions=True)
        try:
            await self.engine.close()
        finally:
            self.journal.close()
            self._liveness.stop()

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
        # rows.is_in_flight, inline: this runs for every event delivered.
        settled = [e for e in envelopes if e.pending_id is not None and e.pending_id < 0]
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
        self._reserve.check()

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
            self._held_in_flight(envelopes, seqs)
            return
        else:
            now = self._clock()
            new_rows = [rows.pending_row(envelope, now, None, None) for envelope in envelopes]
            ids = await self.engine.write(Together(rows.insert_pending_together, new_rows))
        for envelope, row_id in zip(envelopes, ids):
            envelope.pending_id = row_id

    def add_in_flight_now(self, envelopes: list[Envelope]) -> bool:
        if self.journal.sync:  # SQLITE_SYNCHRONOUS=FULL: the answer waits for the group fdatasync
            return False
        self.check_room()
        self._held_in_flight(envelopes, self.journal.write_events(envelopes))
        return True

    def _held_in_flight(self, envelopes: list[Envelope], seqs: range) -> None:
        """Written to the journal: each envelope's id is its sequence number there, negated."""
        if len(envelopes) == 1:  # the usual request
            envelope = envelopes[0]
            self._in_flight_bytes += len(envelope.document)
            envelope.pending_id = -seqs.start
            return
        self._in_flight_bytes += sum(len(envelope.document) for envelope in envelopes)
        for envelope, seq in zip(envelopes, seqs):
            envelope.pending_id = -seq

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
        if exhausted:
            metrics.dead_letters.labels("attempts_exhausted").inc(len(exhausted))
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
        await self._maintenance.adopt_orphans_now_and_then()
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
        self._reserve.spend(cause)
        try:
            # The log's pages go into the file now, with the space just freed, so that it starts over from
            # its beginning rather than grows.
            await self.engine.call(schema.checkpoint)
        except StoreError as exc:
            log.error("pending store %s: copying the write-ahead log into the file failed: %s", self.path, exc)

    async def statistics(self) -> PendingStatistics:
        return await statistics.read(self.engine)

    async def receipts(self, log_ids: list[str]) -> lookup.StoredReceipts:
        return await self.engine.call(lambda connection: lookup.find(connection, log_ids))

    async def oldest_unowned_received_at(self) -> float | None:
        return await statistics.oldest_unowned(self.engine)

    # -- upkeep and the operator's tools: maintenance.py ---------------------------------------------

    async def adopt_orphans(self) -> int:
        return await self._maintenance.adopt_orphans()

    async def expire_pending(self, older_than_days: float) -> int:
        return await self._maintenance.expire_pending(older_than_days)

    async def purge_dead_letters(self, older_than_days: float, reason: str | None = None) -> int:
        return await self._maintenance.purge_dead_letters(older_than_days, reason)

    async def trim_dead_letters(self) -> int:
        return await self._maintenance.trim_dead_letters()

    async def reclaim_space(self) -> int:
        return await self._maintenance.reclaim_space()

    async def make_all_due(self) -> int:
        return await self._maintenance.make_all_due()

    async def list_dead_letters(self, reason: str | None, limit: int) -> list[DeadLetter]:
        return await self._maintenance.list_dead_letters(reason, limit)

    async def requeue_dead_letters(self, reason: str | None) -> int:
        return await self._maintenance.requeue_dead_letters(reason)


async def statistics_read_only(path: str) -> PendingStatistics:
    """The figures of the store at `path`, read on a read-only connection: nothing is written (no migration,
    no journal of its own, no heartbeat), so that they can be read from a full disk or a read-only mount."""
    store = SqliteStore(path)
    await store.engine.open(lambda: schema.open_read_only(path))
    try:
        return await store.statistics()
    finally:
        await store.engine.close()
