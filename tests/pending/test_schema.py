"""Schema versions: a store written before versions existed opens, migrates, and keeps every row."""

import sqlite3

import pytest

from event_collector.envelope import Envelope
from event_collector.exceptions import StoreError
from event_collector.pending import SqliteStore
from event_collector.pending.schema import SCHEMA_VERSION
from support import Clock, query

# The schema as `main` wrote it before versions existed (user_version 0), copied verbatim.
_UNVERSIONED_SCHEMA = """
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

_OLD_OWNER = "0123456789abcdef0123456789abcdef"
_PENDING = [
    # id, log_id, index_name, document, received_at, attempts, next_attempt_at, lease_until, lease_owner, last_error
    (1, "waiting", "events_t_2026-11", b'{"n":1}', 1000.5, 2, 1500.0, 0, None, "429 busy"),
    (2, "in-flight", "events_t_2026-11", b'{"n":22}', 1001.5, 0, 1001.5, 1301.5, _OLD_OWNER, None),
    (5, "replayed", "events_t_2026-11", b'{"n":333}', 1002.5, 1, 1400.0, 1700.0, _OLD_OWNER, "503"),
]
_DEAD = [(3, "rejected", "events_t_2026-11", b'{"bad":1}', 999.0, 1, "400 mapper_parsing_exception", 1200.0)]



def make_unversioned_store(path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.executescript(_UNVERSIONED_SCHEMA)
        connection.executemany("INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", _PENDING)
        connection.executemany("INSERT INTO dead_letter VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _DEAD)
        connection.execute("INSERT INTO owners VALUES (?, 1300.0)", (_OLD_OWNER,))
    connection.close()



async def test_a_store_written_before_versions_migrates_with_its_rows_intact(tmp_path):
    path = tmp_path / "pending.db"
    make_unversioned_store(path)
    clock = Clock()
    store = SqliteStore(str(path), owner_timeout_seconds=30, clock=clock)
    await store.open()
    try:
        assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert query(path, "SELECT id, log_id, index_name, document, received_at, attempts, next_attempt_at,"
                           " lease_owner, last_error FROM pending ORDER BY id") == [
            (row_id, log_id, index, document, received_at, attempts, next_at, owner, error)
            for row_id, log_id, index, document, received_at, attempts, next_at, _, owner, error in _PENDING]
        assert query(path, "SELECT * FROM dead_letter") == _DEAD
        stats = await store.statistics()
        assert (stats.rows, stats.bytes) == (3, 7 + 8 + 9)
        assert (stats.dead_letter_rows, stats.dead_letter_bytes) == (1, 9)
        assert query(path, "SELECT name FROM sqlite_master WHERE name = 'owners'") == []
        # Ids go on from the old sequence: a new row never takes the id of a row deleted before.
        new = [Envelope("events_t_2026-11", "new", b'{"n":4}', 2000.0)]
        await store.add(new, leased=False)
        assert new[0].pending_id == 6
        # The old process's leases are a dead owner's once the timeout has passed: adopted, not lost.
        assert sorted(e.log_id for e in await store.claim_due(10)) == ["new", "waiting"]
        clock.now += 31
        assert sorted(e.log_id for e in await store.claim_due(10)) == ["in-flight", "replayed"]
    finally:
        await store.close()


async def test_opening_an_up_to_date_store_changes_nothing(tmp_path):
    path = tmp_path / "pending.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.add([Envelope("events_t_2026-11", "kept", b"{}", 1.0)], leased=False)
    await store.close()
    schema_before = query(path, "SELECT sql FROM sqlite_master ORDER BY name")
    again = SqliteStore(str(path))
    await again.open()
    await again.close()
    assert query(path, "SELECT sql FROM sqlite_master ORDER BY name") == schema_before
    assert query(path, "SELECT log_id FROM pending") == [("kept",)]


async def test_a_store_from_a_newer_collector_is_refused_untouched(tmp_path):
    path = tmp_path / "pending.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match="newer than this collector"):
        await SqliteStore(str(path)).open()
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
