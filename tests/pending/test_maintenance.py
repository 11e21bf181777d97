"""Retention, space, the backlog's cap, the dead letters' bound and damaged files, on real SQLite files."""

import asyncio
import os
import sqlite3
import time

import pytest

from event_collector.envelope import Envelope
from event_collector.exceptions import StoreError, StoreFull
from event_collector.pending import Failure, SqliteStore, journal
from event_collector.pending.janitor import Janitor
from event_collector.pending.rows import CHUNK_ROWS
from support import query as rows

DAY = 86_400


def envelope(n: int, received_at: float | None = None, size: int = 10) -> Envelope:
    document = b'{"n":"' + b"x" * size + b'"}'
    return Envelope("events_t_2026-11", f"id-{n}", document, received_at or time.time())


def new_store(path, **options) -> SqliteStore:
    return SqliteStore(str(path), backoff_base_seconds=0, backoff_max_seconds=0, **options)


def janitor(store) -> Janitor:
    return Janitor(store, interval_seconds=1, pending_retention_days=7, dead_letter_retention_days=30)


@pytest.fixture
async def store(tmp_path):
    store = new_store(tmp_path / "pending.db")
    await store.open()
    yield store
    await store.close()



async def test_old_pending_rows_expire_into_dead_letter_never_deleted(store):
    await store.add([envelope(1, time.time() - 8 * DAY), envelope(2)], leased=False)
    await store.retry_later([Failure(envelope(3, time.time() - 9 * DAY), "503 busy")], count_attempt=True)
    assert await store.expire_pending(7) == 2
    assert rows(store.path, "SELECT log_id FROM pending") == [("id-2",)]
    dead = dict(rows(store.path, "SELECT log_id, reason FROM dead_letter"))
    assert dead["id-1"] == "expired: still undelivered after 7 days"
    assert dead["id-3"] == "expired: still undelivered after 7 days (last error: 503 busy)"


async def test_rows_in_flight_are_left_to_their_owner_by_retention(store):
    # Durable mode's events in flight are in the journal, out of the janitor's reach; a pending row claimed
    # for delivery is leased in SQLite, and that lease is what retention must respect.
    in_flight = [envelope(1, time.time() - 8 * DAY)]
    await store.add(in_flight, leased=True)
    await store.add([envelope(2, time.time() - 8 * DAY)], leased=False)
    [claimed] = await store.claim_due(10)
    assert rows(store.path, "SELECT count(*) FROM pending WHERE lease_owner IS NOT NULL") == [(1,)]
    assert await store.expire_pending(7) == 0
    await store.retry_later([Failure(in_flight[0], "503"), Failure(claimed, "503")], count_attempt=True)
    assert await store.expire_pending(7) == 2


async def test_retention_works_in_short_transactions(store):
    old = time.time() - 8 * DAY
    await store.add([envelope(n, old) for n in range(2 * CHUNK_ROWS + 10)], leased=False)
    commits_before = store.engine.commits
    assert await store.expire_pending(7) == 2 * CHUNK_ROWS + 10
    # One transaction per chunk (and one that finds nothing): never all the rows under one lock.
    assert store.engine.commits - commits_before == 4
    assert rows(store.path, "SELECT count(*) FROM dead_letter") == [(2 * CHUNK_ROWS + 10,)]


async def test_the_pipeline_writes_between_the_chunks_of_retention(store):
    old = time.time() - 8 * DAY
    await store.add([envelope(n, old) for n in range(6 * CHUNK_ROWS)], leased=False)
    retention = asyncio.create_task(store.expire_pending(7))
    await asyncio.sleep(0)
    # A write of the pipeline (an event that waits: the buffer is full) waits for one chunk at most, not
    # for the whole retention.
    await store.add([envelope(100_000)], leased=False)
    assert not retention.done()
    assert await retention == 6 * CHUNK_ROWS
    assert rows(store.path, "SELECT log_id FROM pending") == [("id-100000",)]


async def test_old_dead_letters_are_purged_and_counted(store):
    await store.dead_letter([Failure(envelope(n), "400 bad") for n in range(3)])
    with sqlite3.connect(store.path) as connection:
        connection.execute("UPDATE dead_letter SET failed_at = ? WHERE log_id != 'id-0'", (time.time() - 31 * DAY,))
    assert await store.purge_dead_letters(30) == 2
    assert rows(store.path, "SELECT log_id FROM dead_letter") == [("id-0",)]


async def test_dead_letters_are_listed_and_requeued_by_reason(store):
    await store.dead_letter([Failure(envelope(1), "400 mapper_parsing_exception: x"),
                             Failure(envelope(2), "gave up after 20 attempts")])
    listed = await store.list_dead_letters("MAPPER", 10)
    assert [letter.log_id for letter in listed] == ["id-1"]
    assert await store.requeue_dead_letters("mapper") == 1
    [claimed] = await store.claim_due(10)
    assert (claimed.log_id, claimed.attempts) == ("id-1", 0)
    assert rows(store.path, "SELECT log_id FROM dead_letter") == [("id-2",)]


async def test_every_waiting_row_is_made_due_but_rows_in_flight_stay_with_their_owner(store):
    await store.retry_later([Failure(envelope(n), "503") for n in range(3)], count_attempt=True)
    with sqlite3.connect(store.path) as connection:
        connection.execute("UPDATE pending SET next_attempt_at = ?", (time.time() + DAY,))
    in_flight = [envelope(9)]
    await store.add(in_flight, leased=True)
    await store.add([envelope(8)], leased=False)
    [claimed] = await store.claim_due(10)  # leased in SQLite to this process while it is delivered
    assert claimed.log_id == "id-8"
    assert await store.claim_due(10) == []
    assert await store.make_all_due() == 3
    assert sorted(e.log_id for e in await store.claim_due(10)) == ["id-0", "id-1", "id-2"]
    assert rows(store.path, "SELECT lease_owner IS NOT NULL, next_attempt_at > 0 FROM pending WHERE log_id = 'id-8'"
                ) == [(1, 1)]


async def test_a_drained_store_gives_its_space_back(store):
    envelopes = [envelope(n, size=2000) for n in range(3000)]
    await store.add(envelopes, leased=False)
    full_size = os.path.getsize(store.path)
    assert full_size > 5_000_000
    await store.delivered(envelopes)
    await janitor(store).tidy()
    assert os.path.getsize(store.path) < full_size / 10


async def test_the_cap_counts_the_backlog_not_the_dead_letters(tmp_path):
    store = new_store(tmp_path / "capped.db", max_bytes=200_000)
    await store.open()
    try:
        # A day of rejected events, several times the cap: new events are still taken.
        await store.dead_letter([Failure(envelope(n, size=1000), "400 mapper") for n in range(1000)])
        await store.add([envelope(5000, size=1000)], leased=False)
        with pytest.raises(StoreFull, match="PENDING_MAX_BYTES"):
            for n in range(1000):
                await store.add([envelope(n, size=1000)], leased=False)
        stored = rows(store.path, "SELECT count(*) FROM pending")[0][0]
        assert 190 <= stored <= 201  # 200,000 bytes of 1,008-byte documents, to the row
        # Already-acknowledged events are never refused: shutdown spills and retries bypass the cap.
        await store.add([envelope(6000)], leased=False, enforce_cap=False)
        await store.retry_later([Failure(envelope(6001), "503")], count_attempt=True)
        assert rows(store.path, "SELECT count(*) FROM pending")[0][0] == stored + 2
    finally:
        await store.close()


async def test_the_cap_is_shared_by_every_process_using_the_store(tmp_path):
    first, second = (new_store(tmp_path / "shared.db", max_bytes=100_000) for _ in range(2))
    await first.open()
    await second.open()
    try:
        await first.add([envelope(n, size=1000) for n in range(100)], leased=False)
        await second.add([envelope(1000)], leased=False, enforce_cap=False)  # any transaction reads the count
        with pytest.raises(StoreFull):
            await second.add([envelope(1001)], leased=False)
        await first.delivered((await first.claim_due(100))[:50])
        await second.add([envelope(1002)], leased=False, enforce_cap=False)
        await second.add([envelope(1003)], leased=False)
    finally:
        await second.close()
        await first.close()


async def test_the_byte_counts_follow_every_change_exactly(store):
    added = [envelope(n, size=n) for n in range(1, 50)]
    await store.add(added, leased=True)
    await store.delivered(added[:10])
    await store.retry_later([Failure(e, "503") for e in added[10:20]], count_attempt=True)
    await store.dead_letter([Failure(e, "400") for e in added[20:30]])
    await store.requeue_dead_letters(None)
    await store.dead_letter([Failure(envelope(99, size=7), "400")])
    assert await store.expire_pending(0) == 20  # the rows nobody holds; 19 stay in flight
    stats = await store.statistics()
    # Events in flight are events not delivered yet too (kept in the process's journal).
    [(table_bytes,)] = rows(store.path, "SELECT coalesce(sum(length(document)), 0) FROM pending")
    pending_bytes = table_bytes + sum(len(e.document) for _, events in journal.unsettled_events(
        store.journal.directory) for e in events)
    [(dead_bytes,)] = rows(store.path, "SELECT coalesce(sum(length(document)), 0) FROM dead_letter")
    assert (stats.bytes, stats.dead_letter_bytes) == (pending_bytes, dead_bytes)
    assert (store.backlog_bytes, store.dead_letter_bytes) == (pending_bytes, dead_bytes)
    assert pending_bytes > 0 and dead_bytes > 0


async def test_dead_letters_over_their_bound_lose_the_oldest_first(tmp_path, caplog):
    from event_collector import metrics

    store = new_store(tmp_path / "pending.db", dead_letter_max_bytes=50_000)
    await store.open()
    dropped_before = metrics.dead_letters_dropped._value.get()
    try:
        await store.dead_letter([Failure(envelope(n, size=992), "400") for n in range(120)])  # 1,000 bytes each
        await janitor(store).tidy()
        kept = [log_id for (log_id,) in rows(store.path, "SELECT log_id FROM dead_letter ORDER BY id")]
        assert kept == [f"id-{n}" for n in range(70, 120)]
        assert store.dead_letter_bytes == 50_000
        assert "dropped the 70 oldest dead letters" in caplog.text
        assert metrics.dead_letters_dropped._value.get() - dropped_before == 70
    finally:
        await store.close()


async def test_the_tools_report_a_damaged_store_and_leave_it_alone(tmp_path):
    path = tmp_path / "pending.db"
    path.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(StoreError, match="cannot open pending store"):
        await new_store(path, recover_damaged=False).open()
    assert path.read_bytes().startswith(b"this is not a database")
    assert [p.name for p in tmp_path.iterdir()] == ["pending.db"]


async def test_a_worker_reports_a_damaged_store_and_never_moves_it(tmp_path):
    # Only `serve` recovers, before workers start: a respawned worker that moved the file would strand
    # what its live siblings acknowledge afterwards.
    from event_collector.lifecycle import Collector
    from event_collector.settings import Settings

    path = tmp_path / "pending.db"
    path.write_bytes(b"this is not a database" * 1000)
    worker = Collector(Settings(jwt_secret="s", database_url=f"sqlite://{path}"))
    with pytest.raises(StoreError, match="cannot open pending store"):
        await worker.start()
    assert [p.name for p in tmp_path.iterdir()] == ["pending.db"]


async def test_a_locked_store_is_reported_and_never_moved_aside_even_where_damage_would_be(tmp_path):
    path = tmp_path / "pending.db"
    store = new_store(path)
    await store.open()
    await store.add([envelope(1)], leased=False)
    await store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process in a long write: busy, not damaged
    try:
        with pytest.raises(StoreError, match="locked"):
            await new_store(path, recover_damaged=True).open()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert rows(path, "SELECT log_id FROM pending") == [("id-1",)]


async def test_an_unreadable_store_file_is_moved_aside_and_a_fresh_one_used(tmp_path, caplog):
    path = tmp_path / "pending.db"
    path.write_bytes(b"this is not a database" * 1000)
    store = new_store(path, recover_damaged=True)
    await store.open()
    try:
        await store.add([envelope(1)], leased=False)
        assert rows(path, "SELECT log_id FROM pending") == [("id-1",)]
    finally:
        await store.close()
    [aside] = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert aside.read_bytes().startswith(b"this is not a database")
    assert "unreadable" in caplog.text and str(aside) in caplog.text
