"""Retention, space, caps, leases of dead processes and damaged files, on real SQLite files."""

import os
import sqlite3
import time

import pytest

from event_collector.envelope import Envelope
from event_collector.exceptions import StoreFull
from event_collector.pending import Failure, SqliteStore, maintenance
from event_collector.pending.janitor import Janitor

DAY = 86_400


def envelope(n: int, received_at: float | None = None, size: int = 10) -> Envelope:
    document = b'{"n":"' + b"x" * size + b'"}'
    return Envelope("events_t_2026-11", f"id-{n}", document, received_at or time.time())


def new_store(path, **options) -> SqliteStore:
    return SqliteStore(str(path), backoff_base_seconds=0, backoff_max_seconds=0, **options)


@pytest.fixture
async def store(tmp_path):
    store = new_store(tmp_path / "pending.db")
    await store.open()
    yield store
    await store.close()


def rows(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as connection:
        return connection.execute(sql).fetchall()


async def test_old_pending_rows_expire_into_dead_letter_never_deleted(store):
    await store.add([envelope(1, time.time() - 8 * DAY), envelope(2)], leased=False)
    await store.retry_later([Failure(envelope(3, time.time() - 9 * DAY), "503 busy")], count_attempt=True)
    assert await store.run(maintenance.expire_pending(7)) == 2
    assert rows(store.path, "SELECT log_id FROM pending") == [("id-2",)]
    dead = dict(rows(store.path, "SELECT log_id, reason FROM dead_letter"))
    assert dead["id-1"] == "expired: still undelivered after 7 days"
    assert dead["id-3"] == "expired: still undelivered after 7 days (last error: 503 busy)"


async def test_old_dead_letters_are_purged_and_counted(store):
    await store.dead_letter([Failure(envelope(n), "400 bad") for n in range(3)])
    with sqlite3.connect(store.path) as connection:
        connection.execute("UPDATE dead_letter SET failed_at = ? WHERE log_id != 'id-0'", (time.time() - 31 * DAY,))
    assert await store.run(maintenance.purge_dead_letters(30)) == 2
    assert rows(store.path, "SELECT log_id FROM dead_letter") == [("id-0",)]


async def test_dead_letters_are_listed_and_requeued_by_reason(store):
    await store.dead_letter([Failure(envelope(1), "400 mapper_parsing_exception: x"),
                             Failure(envelope(2), "gave up after 20 attempts")])
    listed = await store.run(maintenance.list_dead_letters("MAPPER", 10))
    assert [letter.log_id for letter in listed] == ["id-1"]
    assert await store.run(maintenance.requeue_dead_letters("mapper")) == 1
    [claimed] = await store.claim_due(10)
    assert (claimed.log_id, claimed.attempts) == ("id-1", 0)
    assert rows(store.path, "SELECT log_id FROM dead_letter") == [("id-2",)]


async def test_a_drained_store_gives_its_space_back(store):
    envelopes = [envelope(n, size=2000) for n in range(3000)]
    await store.add(envelopes, leased=False)
    full_size = os.path.getsize(store.path)
    assert full_size > 5_000_000
    await store.delivered(envelopes)
    janitor = Janitor(store, interval_seconds=1, heartbeat_seconds=1, pending_retention_days=7,
                      dead_letter_retention_days=30)
    await janitor.tidy()
    assert os.path.getsize(store.path) < full_size / 10


async def test_new_events_are_refused_at_the_cap_but_failures_of_accepted_ones_are_kept(tmp_path):
    store = new_store(tmp_path / "capped.db", max_bytes=200_000)
    await store.open()
    try:
        with pytest.raises(StoreFull):
            for n in range(1000):
                await store.add([envelope(n, size=1000)], leased=False)
        stored = rows(store.path, "SELECT count(*) FROM pending")[0][0]
        assert 0 < stored < 1000
        # Already-acknowledged events are never refused: shutdown spills and retries bypass the cap.
        await store.add([envelope(5000)], leased=False, enforce_cap=False)
        await store.retry_later([Failure(envelope(5001), "503")], count_attempt=True)
        assert rows(store.path, "SELECT count(*) FROM pending")[0][0] == stored + 2
    finally:
        await store.close()


async def test_rows_leased_by_a_process_that_stopped_beating_are_replayed(tmp_path):
    path = tmp_path / "shared.db"
    crashed = new_store(path, owner_timeout_seconds=0.5)
    await crashed.open()
    await crashed.add([envelope(1)], leased=True)
    survivor = new_store(path, owner_timeout_seconds=0.5)
    await survivor.open()
    try:
        assert await survivor.claim_due(10) == []  # the owner is alive: its lease holds
        deadline = time.time() + 0.6
        while time.time() < deadline:  # only the survivor beats from now on
            await survivor.heartbeat()
        [claimed] = await survivor.claim_due(10)
        assert claimed.log_id == "id-1"
    finally:
        await survivor.close()
        crashed._executor.shutdown()


async def test_the_tools_report_a_damaged_store_and_leave_it_alone(tmp_path):
    from event_collector.exceptions import StoreError

    path = tmp_path / "pending.db"
    path.write_bytes(b"this is not a database" * 1000)
    with pytest.raises(StoreError, match="cannot open pending store"):
        await new_store(path, recover_damaged=False).open()
    assert path.read_bytes().startswith(b"this is not a database")
    assert [p.name for p in tmp_path.iterdir()] == ["pending.db"]


async def test_a_worker_reports_a_damaged_store_and_never_moves_it(tmp_path):
    # Only `serve` recovers, before workers start: a respawned worker that moved the file would strand
    # what its live siblings acknowledge afterwards.
    from event_collector.exceptions import StoreError
    from event_collector.lifecycle import Collector
    from event_collector.settings import Settings

    path = tmp_path / "pending.db"
    path.write_bytes(b"this is not a database" * 1000)
    worker = Collector(Settings(jwt_secret="s", database_url=f"sqlite://{path}"))
    with pytest.raises(StoreError, match="cannot open pending store"):
        await worker.start()
    assert [p.name for p in tmp_path.iterdir()] == ["pending.db"]


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
