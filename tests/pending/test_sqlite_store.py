"""The PendingStore interface the pipeline uses, on real SQLite files: adds, claims, leases, retries."""

import asyncio
import sqlite3

import pytest

from event_collector.envelope import Envelope
from event_collector.pending import Failure, SqliteStore
from support import Clock


def envelope(n: int) -> Envelope:
    return Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d}' % n, 1000.0 + n)



def new_store(path, **options) -> SqliteStore:
    return SqliteStore(str(path), max_attempts=3, backoff_base_seconds=0, backoff_max_seconds=0, **options)


@pytest.fixture
async def store(tmp_path):
    store = new_store(tmp_path / "pending.db")
    await store.open()
    yield store
    await store.close()


def rows(store: SqliteStore, sql: str, *params) -> list[tuple]:
    with sqlite3.connect(store.path) as connection:
        return connection.execute(sql, params).fetchall()


async def test_the_schema_is_created_in_wal_mode_on_first_open(store):
    assert rows(store, "PRAGMA journal_mode") == [("wal",)]
    assert {name for (name,) in rows(store, "SELECT name FROM sqlite_master WHERE type = 'table'")} >= {
        "pending", "dead_letter", "counters"}


async def test_unleased_rows_are_claimed_once_and_come_back_intact(store):
    added = [envelope(n) for n in range(5)]
    await store.add(added, leased=False)
    assert all(e.pending_id is not None for e in added)
    claimed = await store.claim_due(3)
    assert [(e.log_id, e.index, e.document, e.received_at) for e in claimed] == [
        (e.log_id, e.index, e.document, e.received_at) for e in added[:3]]
    # Claimed rows are leased: a second replayer does not get them again.
    assert [e.log_id for e in await store.claim_due(10)] == ["id-3", "id-4"]
    assert await store.claim_due(10) == []


async def test_leased_rows_wait_until_released(store):
    held = [envelope(1)]
    await store.add(held, leased=True)
    assert await store.claim_due(10) == []
    await store.release(held)
    assert [e.log_id for e in await store.claim_due(10)] == ["id-1"]


async def test_rows_of_a_live_owner_are_never_claimed_by_another_however_long_it_holds_them(tmp_path):
    clock = Clock()
    holder, other = (new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30) for _ in range(2))
    await holder.open()
    await other.open()
    try:
        in_flight = [envelope(1)]
        await holder.add(in_flight, leased=True)
        await holder.add([envelope(2)], leased=False)
        [replayed] = await holder.claim_due(10)
        for _ in range(3):  # a slow cluster: a day goes by while the holder keeps beating
            clock.now += 8 * 3600
            holder._liveness.beat()
            assert await other.claim_due(10) == []
        # The holder's answers settle the rows it holds; nobody else took them meanwhile.
        await holder.delivered(in_flight + [replayed])
        assert rows(holder, "SELECT count(*) FROM pending") == [(0,)]
    finally:
        await other.close()
        await holder.close()


async def test_a_stale_copy_never_clears_a_lease_another_owner_holds(tmp_path):
    clock = Clock()
    stale, adopter = (new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30) for _ in range(2))
    await stale.open()
    await adopter.open()
    try:
        await stale.add([envelope(1), envelope(2), envelope(3)], leased=False)
        copies = await stale.claim_due(10)  # leased to it in the pending table
        # The stale owner stops beating (frozen) for longer than the timeout: its rows are adopted.
        clock.now += 31
        adopter._liveness.beat()
        assert sorted(e.log_id for e in await adopter.claim_due(10)) == ["id-1", "id-2", "id-3"]
        # It wakes up and settles its copies: none of that touches the adopter's leases.
        await stale.retry_later([Failure(copies[0], "429")], count_attempt=True)
        await stale.release([copies[1]])
        await stale.dead_letter([Failure(copies[2], "400 bad")])
        assert rows(stale, "SELECT log_id, lease_owner, attempts FROM pending ORDER BY id") == [
            ("id-1", adopter.owner, 0), ("id-2", adopter.owner, 0), ("id-3", adopter.owner, 0)]
        assert rows(stale, "SELECT count(*) FROM dead_letter") == [(0,)]
    finally:
        await adopter.close()
        await stale.close()


async def test_rows_of_an_owner_that_stopped_beating_are_adopted_and_replayed(tmp_path):
    clock = Clock()
    crashed = new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30)
    await crashed.open()
    await crashed.add([envelope(1), envelope(2)], leased=False)
    assert len(await crashed.claim_due(10)) == 2  # leased to it in the pending table
    survivor = new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30)
    await survivor.open()
    try:
        clock.now += 29
        assert await survivor.claim_due(10) == []  # within the timeout the owner counts as alive
        clock.now += 11  # past the timeout, and past the third of it claims wait between adoptions
        assert [e.log_id for e in await survivor.claim_due(10)] == ["id-1", "id-2"]
    finally:
        await survivor.close()
        await crashed.close()


async def test_a_closed_store_ends_its_leases_at_once(tmp_path):
    stopped = new_store(tmp_path / "shared.db")
    await stopped.open()
    await stopped.add([envelope(1)], leased=True)
    await stopped.close()
    survivor = new_store(tmp_path / "shared.db")
    await survivor.open()
    try:
        assert [e.log_id for e in await survivor.claim_due(10)] == ["id-1"]
    finally:
        await survivor.close()


async def test_claims_do_not_walk_the_rows_in_flight(store):
    # A full buffer in durable mode: every row leased. A claim must not step through them under the lock.
    await store.add([envelope(n) for n in range(50_000)], leased=True)
    await store.add([envelope(99_999)], leased=False)
    # Adoption looks for dead owners' rows in flight by a scan (in_flight has no index, to keep commits
    # small), but only every third of the owner timeout: the claim itself must not walk them.
    await store.adopt_orphans()
    steps = []
    await store.engine.call(lambda c: c.set_progress_handler(lambda: steps.append(1), 100))
    [claimed] = await store.claim_due(1000)
    await store.engine.call(lambda c: c.set_progress_handler(None, 100))
    assert claimed.log_id == "id-99999"
    # Walking the leased rows would take 50,000 rows' worth of steps (thousands of callbacks).
    assert len(steps) < 50, len(steps)


async def test_delivered_rows_are_deleted(store):
    added = [envelope(n) for n in range(3)]
    await store.add(added, leased=False)
    await store.delivered(added[:2] + [envelope(99)])
    assert rows(store, "SELECT log_id FROM pending") == [("id-2",)]


async def test_failed_events_are_kept_and_counted_then_dead_lettered_after_the_limit(store):
    failing = envelope(7)
    await store.retry_later([Failure(failing, "429 busy")], count_attempt=True)
    assert rows(store, "SELECT attempts, last_error, lease_owner FROM pending") == [(1, "429 busy", None)]
    # Connection errors do not burn attempts.
    await store.retry_later([Failure(failing, "refused")], count_attempt=False)
    assert rows(store, "SELECT attempts FROM pending") == [(1,)]
    for _ in range(2):
        [failing] = await store.claim_due(10)
        await store.retry_later([Failure(failing, "503 down")], count_attempt=True)
    assert rows(store, "SELECT count(*) FROM pending") == [(0,)]
    [(log_id, attempts, reason)] = rows(store, "SELECT log_id, attempts, reason FROM dead_letter")
    assert (log_id, attempts) == ("id-7", 3)
    assert "gave up after 3 attempts: 503 down" == reason


async def test_a_retried_row_is_released_for_the_next_replay(store):
    held = [envelope(1)]
    await store.add(held, leased=True)
    await store.retry_later([Failure(held[0], "429 busy")], count_attempt=True)
    assert rows(store, "SELECT attempts, lease_owner FROM pending") == [(1, None)]
    assert [e.log_id for e in await store.claim_due(10)] == ["id-1"]


async def test_rejected_events_go_to_dead_letter_with_the_reason(store):
    stored = envelope(1)
    await store.add([stored], leased=True)
    await store.dead_letter([Failure(stored, "400 mapper_parsing_exception"), Failure(envelope(2), "400 x")])
    assert rows(store, "SELECT count(*) FROM pending") == [(0,)]
    assert rows(store, "SELECT log_id, reason FROM dead_letter ORDER BY id") == [
        ("id-1", "400 mapper_parsing_exception"), ("id-2", "400 x")]


async def test_an_unreadable_row_goes_to_dead_letter_without_stopping_the_replay(store):
    await store.add([envelope(1), envelope(2)], leased=False)
    with sqlite3.connect(store.path) as connection:
        connection.execute("UPDATE pending SET document = X'FF00' WHERE log_id = 'id-1'")
        connection.execute(
            "INSERT INTO pending (log_id, index_name, document, received_at, next_attempt_at)"
            " VALUES ('id-3', 'i', 'doc', 'not a time', 0)")
    assert [e.log_id for e in await store.claim_due(10)] == ["id-2"]
    assert rows(store, "SELECT log_id, reason FROM dead_letter ORDER BY log_id") == [
        ("id-1", "unreadable pending row"), ("id-3", "unreadable pending row")]


async def test_concurrent_writes_share_transactions_and_all_land(store):
    batches = [[envelope(n * 10 + k) for k in range(10)] for n in range(50)]
    commits_before = store.engine.commits
    await asyncio.gather(*(store.add(batch, leased=False) for batch in batches))
    # 50 writes queued at once: the first runs alone, the 49 that waited share the next transaction.
    assert store.engine.commits - commits_before <= 3
    ids = [e.pending_id for batch in batches for e in batch]
    assert len(set(ids)) == 500
    # Each envelope knows the id of its own row: that id is what delivery deletes.
    stored = dict(rows(store, "SELECT id, log_id FROM pending"))
    assert {e.pending_id: e.log_id for batch in batches for e in batch} == stored


async def test_statistics_describe_what_waits(store):
    await store.add([envelope(1), envelope(2)], leased=False)
    await store.retry_later([Failure(envelope(3), "x")], count_attempt=True)
    await store.dead_letter([Failure(envelope(4), "400")])
    stats = await store.statistics()
    assert stats.rows == 3
    assert stats.bytes == sum(len(envelope(n).document) for n in (1, 2, 3))
    assert stats.oldest_received_at == 1001.0
    assert stats.attempts_histogram == {0: 2, 1: 1}
    assert (stats.dead_letter_rows, stats.dead_letter_bytes) == (1, len(envelope(4).document))
