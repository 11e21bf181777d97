import sqlite3

import pytest

from event_collector.envelope import Envelope
from event_collector.pending import Failure, SqliteStore


def envelope(n: int) -> Envelope:
    return Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d}' % n, 1000.0 + n)


@pytest.fixture
async def store(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"), lease_seconds=300, max_attempts=3,
                        backoff_base_seconds=0, backoff_max_seconds=0)
    await store.open()
    yield store
    await store.close()


def rows(store: SqliteStore, sql: str) -> list[tuple]:
    with sqlite3.connect(store.path) as connection:
        return connection.execute(sql).fetchall()


async def test_the_schema_is_created_in_wal_mode_on_first_open(store):
    assert rows(store, "PRAGMA journal_mode") == [("wal",)]
    assert {name for (name,) in rows(store, "SELECT name FROM sqlite_master WHERE type = 'table'")} >= {
        "pending", "dead_letter"}


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


async def test_delivered_rows_are_deleted(store):
    added = [envelope(n) for n in range(3)]
    await store.add(added, leased=False)
    await store.delivered(added[:2] + [envelope(99)])
    assert rows(store, "SELECT log_id FROM pending") == [("id-2",)]


async def test_failed_events_are_kept_and_counted_then_dead_lettered_after_the_limit(store):
    failing = envelope(7)
    await store.retry_later([Failure(failing, "429 busy")], count_attempt=True)
    assert rows(store, "SELECT attempts, last_error FROM pending") == [(1, "429 busy")]
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
    import asyncio

    batches = [[envelope(n * 10 + k) for k in range(10)] for n in range(50)]
    await asyncio.gather(*(store.add(batch, leased=False) for batch in batches))
    ids = [e.pending_id for batch in batches for e in batch]
    assert len(set(ids)) == 500
    # Each envelope knows the id of its own row: that id is what delivery deletes.
    stored = dict(rows(store, "SELECT id, log_id FROM pending"))
    assert {e.pending_id: e.log_id for batch in batches for e in batch} == stored


async def test_statistics_describe_what_waits(store):
    await store.add([envelope(1), envelope(2)], leased=False)
    await store.retry_later([Failure(envelope(3), "x")], count_attempt=True)
    stats = await store.statistics()
    assert stats.rows == 3
    assert stats.bytes == sum(len(envelope(n).document) for n in (1, 2, 3))
    assert stats.oldest_received_at == 1001.0
    assert stats.attempts_histogram == {0: 2, 1: 1}
