"""The group-commit engine: one SQLite connection on a thread of its own, shared by every coroutine.

The event loop never blocks on disk. Writes that arrive while a transaction runs wait and are committed
together in the next one (group commit), so a thousand concurrent requests cost a handful of fsyncs, not
a thousand. An operation that fails makes its group run again one operation per transaction, so that it
fails alone. This is the one place SQLite errors become StoreError.

Before it uses the connection, the engine checks that the path still names the file it has open (a stat,
about a microsecond): a store deleted or replaced under a running server would otherwise take every write
into a file nobody will ever read. If it changed, `replace` gets the old connection and gives a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ..exceptions import StoreError

log = logging.getLogger(__name__)

Operation = Callable[[sqlite3.Connection], Any]


class Together:
    """An operation that runs in one call with the others of its kind in a group: the inserts of one group
    commit share one executemany. `run_all(connection, items)` returns one result per item."""

    __slots__ = ("run_all", "item")

    def __init__(self, run_all: Callable[[sqlite3.Connection, list[Any]], list[Any]], item: Any) -> None:
        self.run_all = run_all
        self.item = item


class Engine:
    def __init__(self, path: str, *, refresh: Callable[[sqlite3.Connection], None],
                 replace: Callable[[sqlite3.Connection], sqlite3.Connection]) -> None:
        """`refresh(connection)` runs after opening and after every commit (to read counters);
        `replace(old)` returns a connection to the file now at `path`, holding the old file's rows."""
        self.path = path
        self._refresh = refresh
        self._replace = replace
        # Transactions committed: the measure of how well writes are grouped.
        self.commits = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pending-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        # The identity of the write-ahead log when the connection was made; see `log_lost`.
        self._log: tuple[int, int] | None = None
        self._checkpoint_every_commit = False
        self._queued: list[tuple[Operation | Together, asyncio.Future, bool]] = []
        self._committer: asyncio.Task | None = None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        def first_connection() -> None:
            try:
                self._connection = connect()
                self._file = _identity(self.path)
                self._log = _identity(self.path + "-wal")
                self._refresh(self._connection)
            except (sqlite3.Error, OSError) as exc:
                raise StoreError(f"cannot open pending store {self.path}: {exc}") from exc

        await self._on_thread(first_connection)

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer
        await self._on_thread(self._disconnect)
        self._executor.shutdown(wait=True)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def file_changed(self) -> bool:
        """Whether the path no longer names the file open (a stat on the caller's thread)."""
        return self._connection is not None and _identity(self.path) != self._file

    def log_lost(self) -> bool:
        """Whether the write-ahead log this connection writes is no longer the file at its path (deleted, or
        another made there since): SQLite would go on committing into a file nobody reads after a crash."""
        return self._log is not None and _identity(self.path + "-wal") != self._log

    async def copy_every_commit(self) -> None:
        """From now on until the process ends, copy every commit into the store's file at once (a checkpoint,
        reading the deleted log through the descriptor SQLite holds), and copy what is committed so far now.
        The log is never renewed here: every process on the store writes one log, and a connection that
        made a new one while the others write the old would split what they read."""
        self._checkpoint_every_commit = True
        await self._on_thread(lambda: _checkpoint(self._current_connection()))

    async def call(self, function: Operation) -> Any:
        """Run `function(connection)` on the store's thread, in no transaction: for reads, and for
        statements that must run outside one (incremental vacuum, checkpoints)."""
        return await self._on_thread(lambda: function(self._current_connection()))

    async def write(self, operation: Operation | Together) -> Any:
        """Run `operation(connection)` in the next group's transaction; returns its result."""
        return await self._queue(operation, alone=False)

    async def write_alone(self, operation: Operation) -> Any:
        """Run `operation(connection)` in a transaction of its own, after the group queued with it: for
        maintenance, which must not make the pipeline's writes wait for more than one of its steps."""
        return await self._queue(operation, alone=True)

    async def _queue(self, operation: Operation | Together, *, alone: bool) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queued.append((operation, future, alone))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        return await future

    async def _on_thread(self, function: Callable[[], Any]) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, function)
        except sqlite3.Error as exc:
            raise StoreError(f"pending store {self.path}: {exc}") from exc

    async def _commit_queued(self) -> None:
        while self._queued:
            queued, self._queued = self._queued, []
            group = [(operation, future) for operation, future, alone in queued if not alone]
            groups = [group] if group else []
            groups += [[(operation, future)] for operation, future, alone in queued if alone]
            for group in groups:
                await self._commit(group)

    async def _commit(self, group: list[tuple[Operation | Together, asyncio.Future]]) -> None:
        try:
            outcomes = await self._on_thread(lambda: self._run_group([operation for operation, _ in group]))
        except Exception as exc:  # a bug here must not leave the callers waiting forever
            outcomes = [(False, exc)] * len(group)
        for (_, future), (ok, value) in zip(group, outcomes):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _current_connection(self) -> sqlite3.Connection:
        connection = self._connection
        assert connection is not None, "store is not open"
        try:
            if _identity(self.path) == self._file:
                return connection
            replacement = self._replace(connection)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"pending store {self.path} was deleted or replaced, and moving its rows into a new "
                             f"file failed: {exc}") from exc
        connection.close()
        self._connection, self._file = replacement, _identity(self.path)
        self._log = _identity(self.path + "-wal")
        self._refresh(replacement)
        return replacement

    def _run_group(self, operations: list[Operation | Together]) -> list[tuple[bool, Any]]:
        try:
            connection = self._current_connection()
        except Exception as exc:
            return [(False, self._error(exc))] * len(operations)
        try:
            return [(True, result) for result in self._transaction(connection, operations)]
        except _GroupFailed as exc:  # the store could not be locked or committed: all of them fail
            return [(False, self._error(exc.__cause__))] * len(operations)
        except Exception as exc:
            if len(operations) == 1:
                return [(False, self._error(exc))]
            return [self._run_alone(connection, operation) for operation in operations]

    def _run_alone(self, connection: sqlite3.Connection, operation: Operation | Together) -> tuple[bool, Any]:
        try:
            return True, self._transaction(connection, [operation])[0]
        except _GroupFailed as exc:
            return False, self._error(exc.__cause__)
        except Exception as exc:
            return False, self._error(exc)

    def _transaction(self, connection: sqlite3.Connection, operations: list[Operation | Together]) -> list[Any]:
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _GroupFailed() from exc
        try:
            results = _run_operations(connection, operations)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise _GroupFailed() from exc
        self.commits += 1
        if self._checkpoint_every_commit:  # before the callers hear of the commit: it is in the file now
            try:
                _checkpoint(connection)
            except sqlite3.Error as exc:  # committed all the same
                log.error("pending store %s: copying a commit into the file failed: %s", self.path, exc)
        try:
            self._refresh(connection)
        except sqlite3.Error as exc:  # committed all the same: the operations must not be reported failed
            log.error("pending store %s: reading its counters after a commit failed: %s", self.path, exc)
        return results

    def _error(self, exc: BaseException | None) -> BaseException:
        if isinstance(exc, sqlite3.Error):
            error = StoreError(f"pending store {self.path} write failed: {exc}")
            error.__cause__ = exc
            return error
        return exc if exc is not None else StoreError(f"pending store {self.path} write failed")


def _run_operations(connection: sqlite3.Connection, operations: list[Operation | Together]) -> list[Any]:
    results: list[Any] = [None] * len(operations)
    kinds: dict[Callable, list[int]] = {}
    for position, operation in enumerate(operations):
        if isinstance(operation, Together):
            kinds.setdefault(operation.run_all, []).append(position)
        else:
            results[position] = operation(connection)
    for run_all, positions in kinds.items():
        for position, result in zip(positions, run_all(connection, [operations[p].item for p in positions])):
            results[position] = result
    return results


def out_of_space(error: BaseException) -> bool:
    """Whether a StoreError came of a full disk (or a file size limit): SQLite says SQLITE_FULL."""
    return getattr(error.__cause__, "sqlite_errorname", None) == "SQLITE_FULL"


def _checkpoint(connection: sqlite3.Connection) -> None:
    busy, logged, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy or copied < logged:  # a reader of another process holds an older snapshot: copied at a later one
        log.warning("pending store: %d of %d frames of the deleted write-ahead log not copied yet (a reader "
                    "holds them)", logged - copied, logged)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


class _GroupFailed(Exception):
    """BEGIN or COMMIT failed: running the operations one by one would fail the same way."""
