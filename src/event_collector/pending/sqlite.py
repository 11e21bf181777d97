"""The SQLite pending store.

All SQLite work runs on one thread of its own, so the event loop never blocks on disk. Writes from
many coroutines are grouped: whatever arrived while the previous transaction ran is committed in the
next one (group commit), so a thousand concurrent requests cost a handful of fsyncs, not a thousand.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import msgspec

from ..envelope import Envelope
from ..exceptions import StoreError, StoreFull
from ..retry import backoff_seconds
from .base import Failure, PendingStatistics
from .maintenance import dead_letter_pending

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    -- AUTOINCREMENT: an id is never reused, so deleting a delivered row can never hit a newer one.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    log_id TEXT NOT NULL,
    index_name TEXT NOT NULL,
    document BLOB NOT NULL,
    received_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_owner TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS pending_due ON pending (next_attempt_at);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    log_id TEXT,
    index_name TEXT,
    document BLOB,
    received_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL,
    failed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_failed_at ON dead_letter (failed_at);
-- Every process using the store beats here; a lease whose owner stopped beating is void.
CREATE TABLE IF NOT EXISTS owners (
    id TEXT PRIMARY KEY,
    heartbeat_at REAL NOT NULL
);
"""

_Operation = Callable[[sqlite3.Connection], Any]


class SqliteStore:
    def __init__(
        self,
        path: str,
        *,
        lease_seconds: float = 300.0,
        owner_timeout_seconds: float = 30.0,
        max_attempts: int = 20,
        backoff_base_seconds: float = 1.0,
        backoff_max_seconds: float = 600.0,
        max_bytes: int = 1 << 30,
        synchronous: str = "NORMAL",
        recover_damaged: bool = False,
    ) -> None:
        self.path = path
        self._recover_damaged = recover_damaged
        self.owner = uuid.uuid4().hex
        self._lease_seconds = lease_seconds
        self._owner_timeout_seconds = owner_timeout_seconds
        self._max_bytes = max_bytes
        # Bytes in use (pages minus free pages), refreshed after every transaction.
        self.used_bytes = 0
        self._max_attempts = max_attempts
        self._backoff_base_seconds = backoff_base_seconds
        self._backoff_max_seconds = backoff_max_seconds
        self._synchronous = synchronous
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pending-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._queued: list[tuple[_Operation, asyncio.Future]] = []
        self._committer: asyncio.Task | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._on_thread(self._connect)
        await self.heartbeat()

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer
        await self._write(lambda c: c.execute("DELETE FROM owners WHERE id = ?", (self.owner,)))
        await self._on_thread(self._disconnect)
        self._executor.shutdown(wait=True)

    def _connect(self) -> None:
        try:
            self._connection = self._open_checked()
        except sqlite3.DatabaseError as exc:
            # Only a damaged file is moved aside; a locked or unwritable one is an error to report.
            if not (self._recover_damaged and _is_damage(exc)):
                raise StoreError(f"cannot open pending store {self.path}: {exc}") from exc
            # A damaged file must not keep the collector down: keep it for inspection, start afresh.
            aside = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
            log.error("pending store %s is unreadable (%s); moved it to %s and starting on a fresh one",
                      self.path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            try:
                self._connection = self._open_checked()
            except sqlite3.Error as again:
                raise StoreError(f"cannot open pending store {self.path}: {again}") from again
        self._refresh_used_bytes()

    def _open_checked(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            (verdict,) = connection.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise _Damaged(verdict)
            # auto_vacuum must be chosen before the first table exists; it lets a drained store shrink.
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute(f"PRAGMA synchronous = {self._synchronous}")
            connection.executescript(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        return connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _refresh_used_bytes(self) -> None:
        connection = self._connection
        assert connection is not None
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        (free,) = connection.execute("PRAGMA freelist_count").fetchone()
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
        self.used_bytes = (pages - free) * page_size

    async def heartbeat(self) -> None:
        """Tell other processes this one is alive, so its leases hold."""
        now = time.time()
        await self._write(lambda c: c.execute(
            "INSERT INTO owners (id, heartbeat_at) VALUES (?, ?)"
            " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at", (self.owner, now)))

    async def reclaim_space(self) -> int:
        """Give free pages back to the file system once they are a sizeable part of the file.

        Runs outside any transaction: incremental_vacuum only completes when stepped on its own
        (executescript), and the checkpoint then truncates the write-ahead log. Returns pages freed.
        """

        def reclaim() -> int:
            connection = self._connection
            assert connection is not None
            (pages,) = connection.execute("PRAGMA page_count").fetchone()
            (free,) = connection.execute("PRAGMA freelist_count").fetchone()
            if free < 256 or free * 4 < pages:
                return 0
            connection.executescript("PRAGMA incremental_vacuum;")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._refresh_used_bytes()
            return free

        return await self._on_thread(reclaim)

    async def run(self, operation: _Operation) -> Any:
        """Run `operation(connection)` in a transaction of its own group (for maintenance and tools)."""
        return await self._write(operation)

    async def _on_thread(self, function: Callable[[], Any]) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function)
        except sqlite3.Error as exc:
            raise StoreError(f"pending store {self.path}: {exc}") from exc

    # -- group commit ----------------------------------------------------------------------------

    async def _write(self, operation: _Operation) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queued.append((operation, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        return await future

    async def _commit_queued(self) -> None:
        while self._queued:
            group, self._queued = self._queued, []
            try:
                outcomes = await self._on_thread(lambda: self._run_group([op for op, _ in group]))
            except Exception as exc:  # a bug in an operation must not leave its callers waiting forever
                outcomes = [(False, exc)] * len(group)
            for (_, future), (ok, value) in zip(group, outcomes):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _run_group(self, operations: list[_Operation]) -> list[tuple[bool, Any]]:
        """Run operations in one transaction; if one of them fails, run each alone so it fails alone."""
        try:
            return [(True, result) for result in self._transaction(operations)]
        except _BeginFailed as exc:
            # The store could not be locked at all (busy for 30 s, read-only, gone): all of them fail.
            error = StoreError(f"pending store write failed: {exc.__cause__}")
            return [(False, error)] * len(operations)
        except sqlite3.Error:
            return [self._run_alone(operation) for operation in operations]

    def _run_alone(self, operation: _Operation) -> tuple[bool, Any]:
        try:
            return True, self._transaction([operation])[0]
        except (sqlite3.Error, _BeginFailed) as exc:
            return False, StoreError(f"pending store write failed: {exc.__cause__ or exc}")

    def _transaction(self, operations: list[_Operation]) -> list[Any]:
        connection = self._connection
        assert connection is not None, "store is not open"
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _BeginFailed() from exc
        try:
            results = _insert_together(connection, operations)
            results = [result if isinstance(operation, _Insert) else operation(connection)
                       for operation, result in zip(operations, results)]
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        self._refresh_used_bytes()
        return results

    # -- the PendingStore interface --------------------------------------------------------------

    def check_room(self) -> None:
        """Raise StoreFull when the store is at PENDING_MAX_BYTES: new events are refused, never dropped."""
        if self.used_bytes >= self._max_bytes:
            raise StoreFull(f"pending store is at its cap of {self._max_bytes} bytes")

    async def add(self, envelopes: list[Envelope], *, leased: bool, enforce_cap: bool = True) -> None:
        if not envelopes:
            return
        if enforce_cap:
            self.check_room()
        now = time.time()
        lease_until = now + self._lease_seconds if leased else 0.0
        owner = self.owner if leased else None

        ids = await self._write(_Insert([_row(e, now, lease_until, owner, None) for e in envelopes]))
        for envelope, row_id in zip(envelopes, ids):
            envelope.pending_id = row_id

    async def delivered(self, envelopes: list[Envelope]) -> None:
        ids = [(e.pending_id,) for e in envelopes if e.pending_id is not None]
        if ids:
            await self._write(lambda c: c.executemany("DELETE FROM pending WHERE id = ?", ids))

    async def retry_later(self, failures: list[Failure], *, count_attempt: bool) -> None:
        if not failures:
            return
        now = time.time()
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
        stored = [f for f in waiting if f.envelope.pending_id is not None]
        new_rows = _Insert([_row(f.envelope, now + self._backoff_seconds(f.envelope.attempts), 0.0, None, f.reason)
                            for f in new])
        updates = [(f.envelope.attempts, now + self._backoff_seconds(f.envelope.attempts), f.reason,
                    f.envelope.pending_id) for f in stored]

        def keep(connection: sqlite3.Connection) -> range | None:
            connection.executemany(
                "UPDATE pending SET attempts = ?, next_attempt_at = ?, lease_until = 0, lease_owner = NULL,"
                " last_error = ? WHERE id = ?", updates)
            _move_to_dead_letter(connection, exhausted, now)
            return _insert_together(connection, [new_rows])[0] if new else None

        ids = await self._write(keep)
        for failure, row_id in zip(new, ids or ()):
            failure.envelope.pending_id = row_id

    def _backoff_seconds(self, attempts: int) -> float:
        return backoff_seconds(attempts, self._backoff_base_seconds, self._backoff_max_seconds)

    async def dead_letter(self, failures: list[Failure]) -> None:
        if failures:
            now = time.time()
            await self._write(lambda c: _move_to_dead_letter(c, failures, now))

    async def release(self, envelopes: list[Envelope]) -> None:
        ids = [(e.pending_id,) for e in envelopes if e.pending_id is not None]
        if ids:
            await self._write(lambda c: c.executemany(
                "UPDATE pending SET lease_until = 0, lease_owner = NULL WHERE id = ?", ids))

    async def claim_due(self, limit: int) -> list[Envelope]:
        if limit <= 0:
            return []
        now = time.time()

        def claim(connection: sqlite3.Connection) -> list[Envelope]:
            # Due rows that nobody holds: never leased, released, lease run out, or owner gone silent.
            rows = connection.execute(
                "UPDATE pending SET lease_until = ?, lease_owner = ? WHERE id IN (SELECT id FROM pending"
                " WHERE next_attempt_at <= ? AND (lease_until <= ? OR lease_owner IS NULL"
                " OR lease_owner NOT IN (SELECT id FROM owners WHERE heartbeat_at > ?))"
                " ORDER BY next_attempt_at LIMIT ?)"
                " RETURNING id, log_id, index_name, document, received_at, attempts",
                (now + self._lease_seconds, self.owner, now, now, now - self._owner_timeout_seconds, limit),
            ).fetchall()
            envelopes, unreadable = [], []
            for row in rows:
                envelope = _envelope_from_row(row)
                if envelope is None:
                    unreadable.append(row)
                else:
                    envelopes.append(envelope)
            for row in unreadable:
                log.error("pending row %s cannot be read; moved to dead-letter", row[0])
                dead_letter_pending(connection, "id = ?", (row[0],), "unreadable pending row")
            return envelopes

        return await self._write(claim)

    # -- inspection ------------------------------------------------------------------------------

    async def statistics(self) -> PendingStatistics:
        def read() -> PendingStatistics:
            connection = self._connection
            assert connection is not None
            rows, size, oldest = connection.execute(
                "SELECT count(*), coalesce(sum(length(document)), 0), min(received_at) FROM pending"
            ).fetchone()
            histogram = dict(connection.execute("SELECT attempts, count(*) FROM pending GROUP BY attempts"))
            (dead,) = connection.execute("SELECT count(*) FROM dead_letter").fetchone()
            return PendingStatistics(rows, size, oldest, histogram, dead)

        return await self._on_thread(read)


class _Damaged(sqlite3.DatabaseError):
    """PRAGMA quick_check found the file damaged."""


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    return isinstance(error, _Damaged) or getattr(error, "sqlite_errorname", "") in ("SQLITE_CORRUPT",
                                                                                      "SQLITE_NOTADB")


def _row(envelope: Envelope, next_attempt_at: float, lease_until: float, owner: str | None,
         last_error: str | None) -> tuple:
    """A new pending row, in the column order of `_insert_together`."""
    return (envelope.log_id, envelope.index, envelope.document, envelope.received_at, envelope.attempts,
            next_attempt_at, lease_until, owner, last_error)


class _BeginFailed(Exception):
    """BEGIN IMMEDIATE failed: nothing ran, so running the operations one by one would not help."""


class _Insert:
    """New pending rows. The inserts of one group commit share a single executemany."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows


def _insert_together(connection: sqlite3.Connection, operations: list[Any]) -> list[range | None]:
    """Insert the rows of every _Insert among `operations` at once; each gets the range of its ids."""
    inserts = [operation for operation in operations if isinstance(operation, _Insert)]
    if not inserts:
        return [None] * len(operations)
    # Under BEGIN IMMEDIATE nobody else writes, and AUTOINCREMENT hands out ids in order, so the rows
    # of one executemany get consecutive ids after the sequence's previous value.
    (last,) = connection.execute("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'pending'").fetchone()
    connection.executemany(
        "INSERT INTO pending (log_id, index_name, document, received_at, attempts, next_attempt_at, lease_until,"
        " lease_owner, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [row for insert in inserts for row in insert.rows],
    )
    results: list[range | None] = []
    next_id = last + 1
    for operation in operations:
        if isinstance(operation, _Insert):
            results.append(range(next_id, next_id + len(operation.rows)))
            next_id += len(operation.rows)
        else:
            results.append(None)
    return results


def _move_to_dead_letter(connection: sqlite3.Connection, failures: list[Failure], now: float) -> None:
    for failure in failures:
        envelope = failure.envelope
        connection.execute(
            "INSERT INTO dead_letter (log_id, index_name, document, received_at, attempts, reason, failed_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (envelope.log_id, envelope.index, envelope.document, envelope.received_at, envelope.attempts,
             failure.reason, now),
        )
        if envelope.pending_id is not None:
            connection.execute("DELETE FROM pending WHERE id = ?", (envelope.pending_id,))


def _envelope_from_row(row: tuple) -> Envelope | None:
    """The envelope a pending row holds, or None when the row is damaged (wrong types, invalid JSON)."""
    row_id, log_id, index, document, received_at, attempts = row
    if isinstance(document, str):
        document = document.encode()
    if not (isinstance(log_id, str) and isinstance(index, str) and isinstance(document, bytes)
            and isinstance(received_at, (int, float)) and isinstance(attempts, int)):
        return None
    try:
        msgspec.json.decode(document)
    except msgspec.DecodeError:
        return None
    return Envelope(index, log_id, document, float(received_at), row_id, attempts)
