"""The group-commit engine on its own: how writes are grouped, and how one failing write fails alone."""

import asyncio
import sqlite3

import pytest

from event_collector.exceptions import StoreError
from event_collector.pending.engine import Engine, Together


@pytest.fixture
async def engine(tmp_path):
    path = str(tmp_path / "engine.db")

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.2)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)")
        return connection

    def no_replacement(old: sqlite3.Connection) -> sqlite3.Connection:
        raise AssertionError("the file was not replaced")

    engine = Engine(path, refresh=lambda connection: None, replace=no_replacement)
    await engine.open(connect)
    yield engine
    await engine.close()


def insert(n: int):
    return lambda connection: connection.execute("INSERT INTO t VALUES (?)", (n,)).lastrowid


def stored(engine) -> list[int]:
    with sqlite3.connect(engine.path) as connection:
        return [n for (n,) in connection.execute("SELECT n FROM t ORDER BY n")]


async def test_writes_queued_while_a_transaction_runs_share_the_next_one(engine):
    results = await asyncio.gather(*(engine.write(insert(n)) for n in range(200)))
    assert results == list(range(200))
    # All are queued before the first transaction starts (or while it runs): one or two commits, not 200.
    assert engine.commits <= 2
    assert stored(engine) == list(range(200))


async def test_operations_of_a_kind_run_in_one_call(engine):
    calls = []

    def insert_all(connection, items):
        calls.append(items)
        connection.executemany("INSERT INTO t VALUES (?)", [(n,) for n in items])
        return [f"row {n}" for n in items]

    await engine.write(insert(1000))
    results = await asyncio.gather(*(engine.write(Together(insert_all, n)) for n in range(5)))
    assert results == [f"row {n}" for n in range(5)]
    assert calls == [[0, 1, 2, 3, 4]]


async def test_one_failing_write_fails_alone_and_the_others_of_its_group_commit(engine):
    def bug(connection):
        raise ValueError("a bug in one operation")

    writes = [insert(n) for n in range(10)]
    writes[4] = insert(3)  # a duplicate key: SQLite refuses it
    writes[7] = bug
    outcomes = await asyncio.gather(*(engine.write(w) for w in writes), return_exceptions=True)
    assert isinstance(outcomes[4], StoreError) and "UNIQUE" in str(outcomes[4])
    assert isinstance(outcomes[4].__cause__, sqlite3.IntegrityError)
    assert isinstance(outcomes[7], ValueError)  # not an SQLite error: it is not dressed up as one
    assert [o for n, o in enumerate(outcomes) if n not in (4, 7)] == [0, 1, 2, 3, 5, 6, 8, 9]
    assert stored(engine) == [0, 1, 2, 3, 5, 6, 8, 9]


async def test_a_store_locked_by_another_process_fails_the_whole_group_with_a_store_error(engine):
    blocker = sqlite3.connect(engine.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        outcomes = await asyncio.gather(*(engine.write(insert(n)) for n in range(5)), return_exceptions=True)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert all(isinstance(o, StoreError) and "locked" in str(o) for o in outcomes)
    commits = engine.commits
    assert await engine.write(insert(7)) == 7
    assert engine.commits == commits + 1
