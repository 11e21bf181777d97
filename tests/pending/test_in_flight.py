"""Schema 3: durable mode's rows in flight live in `in_flight`, a table with no index, trigger or
AUTOINCREMENT, so that each group commit writes as few pages as it can. These tests fail on the layout
before it (schema 2, every row in `pending`)."""

import os
import sqlite3

import pytest

from event_collector.envelope import Envelope
from event_collector.exceptions import StoreFull
from event_collector.pending import Failure, SqliteStore, schema
from support import write_store_of_schema_2

_OWNER_OF_MAIN = "0123456789abcdef0123456789abcdef"


def envelope(n: int, size: int = 0) -> Envelope:
    return Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d,"pad":"%s"}' % (n, b"x" * size), 1000.0 + n)


class Clock:
    def __init__(self, now: float = 2_000_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_store(path, **options) -> SqliteStore:
    return SqliteStore(str(path), max_attempts=3, backoff_base_seconds=0, backoff_max_seconds=0, **options)


def query(path, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql, params).fetchall()


async def test_an_accepted_event_is_written_to_in_flight_alone(tmp_path):
    store = new_store(tmp_path / "pending.db")
    await store.open()
    try:
        held = [envelope(1), envelope(2)]
        await store.add(held, leased=True)
        assert query(store.path, "SELECT id, log_id, owner FROM in_flight ORDER BY id") == [
            (1, "id-1", store.owner), (2, "id-2", store.owner)]
        # Nothing else changes per commit: no pending row, no sequence, no counter.
        assert query(store.path, "SELECT count(*) FROM pending") == [(0,)]
        assert query(store.path, "SELECT name FROM sqlite_sequence WHERE name = 'in_flight'") == []
        assert query(store.path, "SELECT value FROM counters WHERE name = 'pending_bytes'") == [(0,)]
        assert query(store.path, "SELECT name FROM sqlite_master WHERE tbl_name = 'in_flight'"
                                 " AND type != 'table'") == []
        await store.delivered(held)
        assert query(store.path, "SELECT count(*) FROM in_flight") == [(0,)]
    finally:
        await store.close()


async def test_rows_in_flight_that_must_wait_move_to_the_pending_table(tmp_path):
    store = new_store(tmp_path / "pending.db")
    await store.open()
    try:
        held = [envelope(n) for n in range(4)]
        await store.add(held, leased=True)
        await store.retry_later([Failure(held[0], "429 busy")], count_attempt=True)
        await store.release([held[1]])
        await store.dead_letter([Failure(held[2], "400 mapper")])
        assert query(store.path, "SELECT log_id, attempts, lease_owner, last_error FROM pending ORDER BY id") == [
            ("id-0", 1, None, "429 busy"), ("id-1", 0, None, None)]
        assert query(store.path, "SELECT log_id, reason, document FROM dead_letter") == [
            ("id-2", "400 mapper", held[2].document)]
        assert query(store.path, "SELECT log_id FROM in_flight") == [("id-3",)]
        # Moved rows are the pending table's now: claimed, retried and counted as before.
        assert sorted(e.log_id for e in await store.claim_due(10)) == ["id-0", "id-1"]
        stats = await store.statistics()
        assert (stats.rows, stats.attempts_histogram) == (3, {0: 2, 1: 1})
        assert stats.bytes == sum(len(e.document) for e in (held[0], held[1], held[3]))
    finally:
        await store.close()


async def test_a_dead_processes_rows_in_flight_are_adopted_into_pending_once(tmp_path):
    # It was killed between the commit and the delete: some of its events were delivered, some not.
    clock = Clock()
    crashed = new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30)
    await crashed.open()
    await crashed.add([envelope(n) for n in range(5)], leased=True)
    crashed.engine._executor.shutdown()  # like kill -9: no release, no delete, the heartbeat stops
    crashed._liveness._stopping.set()
    survivor, other = (new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30) for _ in range(2))
    await survivor.open()
    await other.open()
    try:
        assert await survivor.claim_due(10) == []  # within the timeout its rows are its own
        clock.now += 31
        survivor._liveness.beat()
        other._liveness.beat()
        assert await survivor.adopt_orphans() == 5
        assert await other.adopt_orphans() == 0  # a second adopter finds nothing: no row twice
        assert query(survivor.path, "SELECT count(*) FROM in_flight") == [(0,)]
        claimed = await survivor.claim_due(10) + await other.claim_due(10)
        assert sorted(e.log_id for e in claimed) == [f"id-{n}" for n in range(5)]
        assert all(e.attempts == 0 and e.pending_id > 0 for e in claimed)
        await survivor.delivered(claimed)
        assert (await survivor.statistics()).rows == 0
    finally:
        await other.close()
        await survivor.close()


async def test_a_process_taken_for_dead_never_settles_rows_adopted_from_in_flight(tmp_path):
    clock = Clock()
    stale, adopter = (new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30) for _ in range(2))
    await stale.open()
    await adopter.open()
    try:
        copies = [envelope(1), envelope(2), envelope(3)]
        await stale.add(copies, leased=True)
        clock.now += 31
        adopter._liveness.beat()
        assert sorted(e.log_id for e in await adopter.claim_due(10)) == ["id-1", "id-2", "id-3"]
        await stale.retry_later([Failure(copies[0], "429")], count_attempt=True)
        await stale.release([copies[1]])
        await stale.dead_letter([Failure(copies[2], "400 bad")])
        assert query(stale.path, "SELECT log_id, lease_owner, attempts FROM pending ORDER BY id") == [
            ("id-1", adopter.owner, 0), ("id-2", adopter.owner, 0), ("id-3", adopter.owner, 0)]
        assert query(stale.path, "SELECT count(*) FROM dead_letter") == [(0,)]
    finally:
        await adopter.close()
        await stale.close()


async def test_the_cap_counts_rows_in_flight_until_they_are_settled(tmp_path):
    store = new_store(tmp_path / "pending.db", max_bytes=10_000)
    await store.open()
    try:
        held = [envelope(n, size=1000) for n in range(10)]
        await store.add(held, leased=True)
        assert store.backlog_bytes == sum(len(e.document) for e in held) >= 10_000
        with pytest.raises(StoreFull):
            await store.add([envelope(99)], leased=True)
        await store.delivered(held[:5])
        await store.add([envelope(100)], leased=True)  # room again
        # Rows that move to pending stay counted once, by the pending table's trigger.
        await store.retry_later([Failure(e, "503") for e in held[5:]], count_attempt=True)
        [(on_disk,)] = query(store.path, "SELECT (SELECT sum(length(document)) FROM pending)"
                                         " + (SELECT sum(length(document)) FROM in_flight)")
        assert store.backlog_bytes == on_disk
    finally:
        await store.close()


async def test_a_dead_processes_rows_in_flight_count_for_the_cap_once_adopted(tmp_path):
    clock = Clock()
    crashed = new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30, max_bytes=10_000)
    survivor = new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30, max_bytes=10_000)
    await crashed.open()
    await survivor.open()
    try:
        await crashed.add([envelope(n, size=1000) for n in range(10)], leased=True)
        survivor.check_room()  # another live process's events in memory: its own to count
        clock.now += 31
        survivor._liveness.beat()
        await survivor.adopt_orphans()
        with pytest.raises(StoreFull):
            survivor.check_room()
    finally:
        await survivor.close()
        await crashed.close()


def make_store_of_main(path) -> None:
    """A store as `main` (schema 2) leaves it: one process's rows in flight, leased in `pending`, and
    rows waiting for a retry."""
    write_store_of_schema_2(path, [
        ("flying-1", "events_t_2026-11", b'{"n":1}', 1000.0, 0, 1000.0, _OWNER_OF_MAIN, None),
        ("waiting", "events_t_2026-11", b'{"n":22}', 1001.0, 2, 1500.0, None, "429 busy"),
        ("flying-2", "events_t_2026-11", b'{"n":333}', 1002.0, 0, 1002.0, _OWNER_OF_MAIN, None),
    ])


async def test_a_store_of_the_previous_schema_opens_and_every_row_is_replayed(tmp_path):
    path = tmp_path / "pending.db"
    make_store_of_main(path)
    clock = Clock()
    store = new_store(path, clock=clock, owner_timeout_seconds=30)
    await store.open()
    try:
        assert query(path, "PRAGMA user_version") == [(schema.SCHEMA_VERSION,)]
        assert (await store.statistics()).bytes == 7 + 8 + 9  # the old counters carried over
        # New events go in flight; the old rows stay where they were.
        new = [envelope(7)]
        await store.add(new, leased=True)
        assert new[0].pending_id < 0
        assert [e.log_id for e in await store.claim_due(10)] == ["waiting"]
        # main's process never beats in this directory: its leases are a dead owner's after the timeout.
        clock.now += 31
        store._liveness.beat()
        assert sorted(e.log_id for e in await store.claim_due(10)) == ["flying-1", "flying-2"]
        await store.delivered(new)
        assert query(path, "SELECT count(*) FROM in_flight") == [(0,)]
    finally:
        await store.close()


async def test_a_commit_of_one_event_writes_about_one_page(tmp_path):
    """The write amplification, counted deterministically: the frames each commit appends to SQLite's
    write-ahead log, for events written one commit each (350 events/s arrive one by one) and delivered
    in bulks. Schema 2 wrote 4 or 5 pages per commit (table leaf, sqlite_sequence, owner index, counter)."""
    store = new_store(tmp_path / "pending.db")
    await store.open()
    try:
        await store.engine.call(lambda c: c.execute("PRAGMA wal_autocheckpoint = 0"))  # the log only grows
        (page_size,) = query(store.path, "PRAGMA page_size")[0]
        document = b'{"pad":"%s"}' % (b"x" * 500)  # about the size of a real event's document
        wal_before = os.path.getsize(store.path + "-wal")
        held = []
        for n in range(200):
            one = [Envelope("events_t_2026-11", f"id-{n}", document, 1000.0 + n)]
            await store.add(one, leased=True)
            held += one
            if len(held) == 40:  # a bulk's worth, as the senders confirm them
                await store.delivered(held)
                held = []
        frames = (os.path.getsize(store.path + "-wal") - wal_before) / (page_size + 24)
        # 200 insert commits and 5 delete commits: measured 1.7 frames per event (schema 2: 4.9).
        assert frames / 200 <= 2.5, frames / 200
    finally:
        await store.close()
