"""Opening a SQLite store file: pragmas, the schema and its forward migrations, and damaged-file recovery.

The schema version is `PRAGMA user_version`. A file made before versions existed says 0 and holds the
tables of version 1 (`CREATE TABLE IF NOT EXISTS` leaves them as they are), so every file, new or old,
runs the same chain of migrations up to SCHEMA_VERSION, in one transaction, with its rows intact.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from ..exceptions import StoreError

log = logging.getLogger(__name__)

# How long a write waits for another process's transaction. Liveness does not go through SQLite and the
# janitor's chunks hold the lock for well under a second, so a longer wait means the store is stuck.
BUSY_TIMEOUT_SECONDS = 5.0
# The write-ahead log is cut back to this size whenever it restarts, without a checkpoint that waits.
_JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024

_VERSION_1 = """
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
CREATE TABLE IF NOT EXISTS owners (
    id TEXT PRIMARY KEY,
    heartbeat_at REAL NOT NULL
);
"""

# Leases no longer expire (lease_until goes) and liveness moved to heartbeat files (owners goes). Claims,
# retention and adoption each get an index that leaves out the rows they must not walk: in-flight rows
# are only in `pending_owner`. Triggers keep the documents' bytes, so the cap needs no scan.
_VERSION_2 = """
ALTER TABLE pending DROP COLUMN lease_until;
DROP TABLE owners;
DROP INDEX pending_due;
CREATE INDEX pending_claimable ON pending (next_attempt_at) WHERE lease_owner IS NULL;
CREATE INDEX pending_unowned_received ON pending (received_at) WHERE lease_owner IS NULL;
CREATE INDEX pending_owner ON pending (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counters SELECT 'pending_bytes', coalesce(sum(length(document)), 0) FROM pending;
INSERT INTO counters SELECT 'dead_letter_bytes', coalesce(sum(length(document)), 0) FROM dead_letter;
CREATE TRIGGER pending_bytes_added AFTER INSERT ON pending BEGIN
    UPDATE counters SET value = value + length(NEW.document) WHERE name = 'pending_bytes';
END;
CREATE TRIGGER pending_bytes_removed AFTER DELETE ON pending BEGIN
    UPDATE counters SET value = value - length(OLD.document) WHERE name = 'pending_bytes';
END;
CREATE TRIGGER pending_bytes_changed AFTER UPDATE OF document ON pending BEGIN
    UPDATE counters SET value = value - length(OLD.document) + length(NEW.document) WHERE name = 'pending_bytes';
END;
CREATE TRIGGER dead_letter_bytes_added AFTER INSERT ON dead_letter BEGIN
    UPDATE counters SET value = value + coalesce(length(NEW.document), 0) WHERE name = 'dead_letter_bytes';
END;
CREATE TRIGGER dead_letter_bytes_removed AFTER DELETE ON dead_letter BEGIN
    UPDATE counters SET value = value - coalesce(length(OLD.document), 0) WHERE name = 'dead_letter_bytes';
END;
"""

# Durable mode writes every accepted event before its answer, one small group commit after another, and
# SQLite writes whole pages per commit: the pending table's leaf, `sqlite_sequence`, the `pending_owner`
# leaf and the `counters` row made ~20 KB per event (bench/RESULTS.md). Rows in flight (committed, leased
# to the process that holds them in memory) now go to a table of their own with nothing else to update
# per commit: no AUTOINCREMENT (`id` is the rowid; a delete names its row by (id, log_id), so a reused id
# never hits another event), no index (its owner is read only by adoption, a rare scan) and no trigger
# (its bytes are counted by the processes, see sqlite.py). A row that must wait moves to `pending`.
_VERSION_3 = """
CREATE TABLE in_flight (
    id INTEGER PRIMARY KEY,
    log_id TEXT NOT NULL,
    index_name TEXT NOT NULL,
    document BLOB NOT NULL,
    received_at REAL NOT NULL,
    owner TEXT NOT NULL
);
"""

# Receipts (POST /v1/receipts) look events up by log_id, up to a thousand at a time, in both tables: without
# these a receipt would scan a backlog of millions. Rows enter `pending` only when they must wait (durable
# mode's events in flight are in the journal), so the hot path does not pay for the index.
_VERSION_4 = """
CREATE INDEX pending_log_id ON pending (log_id);
CREATE INDEX dead_letter_log_id ON dead_letter (log_id);
"""

_MIGRATIONS: list[str] = [_VERSION_1, _VERSION_2, _VERSION_3, _VERSION_4]
SCHEMA_VERSION = len(_MIGRATIONS)


def open_connection(path: str, *, synchronous: str, recover_damaged: bool) -> sqlite3.Connection:
    """A connection to the store at `path`, migrated to SCHEMA_VERSION (the file is made if missing).

    With `recover_damaged`, a damaged file (quick_check fails, or SQLite calls it corrupt or not a
    database) is moved aside to `<path>.corrupt-<time>` and a fresh one made; a locked or unwritable file
    is always an error. Raises SQLite's errors (the engine says what they mean), or StoreError for a
    store of a newer version.
    """
    try:
        return _open_checked(path, synchronous)
    except sqlite3.DatabaseError as exc:
        if not (recover_damaged and _is_damage(exc)):
            raise
        # A damaged file must not keep the collector down: keep it for inspection, start afresh.
        aside = f"{path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}"
        log.error("pending store %s is unreadable (%s); moved it to %s and starting on a fresh one", path, exc, aside)
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.replace(path + suffix, aside + suffix)
        return _open_checked(path, synchronous)


def open_read_only(path: str) -> sqlite3.Connection:
    """A connection that can only read the store at `path`, which must exist and be of SCHEMA_VERSION. It
    writes nothing, not even the pragmas and the migration check `open_connection` commits, so it opens on
    a full disk (where those fail) and on a read-only mount."""
    connection = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True,
                                 timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        _refuse_newer(version)
        if version < SCHEMA_VERSION:
            raise StoreError(f"the pending store's schema is version {version}, older than this collector's "
                             f"{SCHEMA_VERSION}: the server (or `pending replay`) migrates it on open; read it then")
    except BaseException:
        connection.close()
        raise
    return connection


def _open_checked(path: str, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
    try:
        (verdict,) = connection.execute("PRAGMA quick_check").fetchone()
        if verdict != "ok":
            raise _Damaged(verdict)
        # auto_vacuum must be chosen before the first table exists; it lets a drained store shrink.
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        connection.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT_BYTES}")
        migrate(connection)
        # This connection's list of pending rows to move to dead-letter (rows.move_to_dead_letter).
        connection.execute("PRAGMA temp_store = MEMORY")
        connection.execute("CREATE TEMP TABLE doomed (id INTEGER PRIMARY KEY, reason TEXT NOT NULL,"
                           " attempts INTEGER NOT NULL)")
    except BaseException:
        connection.close()
        raise
    return connection


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"the pending store's schema is version {version}, newer than this collector's "
                         f"{SCHEMA_VERSION}: run the newer collector, or move the file aside")


def migrate(connection: sqlite3.Connection) -> None:
    """Run the migrations the file has not had yet, all in one transaction (several processes may try)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        _refuse_newer(version)
        for script in _MIGRATIONS[version:]:
            _run_script(connection, script)
        if version < SCHEMA_VERSION:
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _run_script(connection: sqlite3.Connection, script: str) -> None:
    # executescript would commit the migration's transaction first: run the statements one by one.
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            connection.execute(statement)
            statement = ""


def _is_damage(error: sqlite3.DatabaseError) -> bool:
    return isinstance(error, _Damaged) or getattr(error, "sqlite_errorname", "") in ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class _Damaged(sqlite3.DatabaseError):
    """PRAGMA quick_check found the file damaged."""



# Giving space back. Each step runs outside any transaction: incremental_vacuum only completes when stepped
# on its own (executescript).
_PAGES_PER_STEP = 2048


def vacuum_step(connection: sqlite3.Connection) -> int:
    """Give up to _PAGES_PER_STEP free pages back to the file system; returns the bytes given back.

    The free pages a step takes off the file's end are marked dirty, and SQLite's cache (500 pages by
    default) would spill them into the write-ahead log mid-step: 1,622 frames, 6.5 MiB, for a step of
    2,048 pages. Held in memory instead (8 MiB at most, for the step), the step writes a handful of pages,
    so that a drained store gives its space back on a full disk too."""
    (free,) = connection.execute("PRAGMA freelist_count").fetchone()
    (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    try:
        connection.executescript(f"PRAGMA cache_spill = OFF; PRAGMA incremental_vacuum({_PAGES_PER_STEP});")
    finally:
        connection.execute("PRAGMA cache_spill = ON")
    (left,) = connection.execute("PRAGMA freelist_count").fetchone()
    return (free - left) * page_size


def worth_vacuuming(connection: sqlite3.Connection) -> bool:
    """Free pages are a sizeable part of the file (a quarter, and at least 256 of them)."""
    (pages,) = connection.execute("PRAGMA page_count").fetchone()
    (free,) = connection.execute("PRAGMA freelist_count").fetchone()
    return free >= 256 and free * 4 >= pages


def checkpoint(connection: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the file, as far as readers allow, without waiting for them; the file
    then shrinks to what the vacuum left, and the log restarts (cut to journal_size_limit)."""
    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
