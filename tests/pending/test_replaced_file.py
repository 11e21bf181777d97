"""The store's file deleted or replaced while in use: what it held moves into the file now at its path."""

import os
import sqlite3

import pytest

from event_collector.envelope import Envelope
from event_collector.exceptions import StoreError
from event_collector.pending import Failure, SqliteStore, copying
from support import query


def envelope(n: int) -> Envelope:
    return Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d}' % n, 1000.0 + n)


def delete_store_files(path) -> None:
    """What `rm pending.db*` does to the files SQLite has open (the heartbeat directory stays: rm without -r)."""
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{path}{suffix}")



async def test_a_deleted_store_is_made_again_with_every_row_and_id_at_the_next_write(tmp_path, caplog):
    store = SqliteStore(str(tmp_path / "pending.db"))
    await store.open()
    try:
        await store.add([envelope(n) for n in range(3)], leased=False)
        held = await store.claim_due(10)  # leased to this process, in memory
        await store.add([envelope(10), envelope(11)], leased=False)
        await store.dead_letter([Failure(envelope(20), "400 mapper")])
        in_flight = [envelope(40)]  # in the journal, beside the file: not touched by its deletion
        await store.add(in_flight, leased=True)
        delete_store_files(store.path)

        await store.add([envelope(30)], leased=False)
        assert query(store.path, "SELECT id, log_id, lease_owner FROM pending ORDER BY id") == [
            (1, "id-0", store.owner), (2, "id-1", store.owner), (3, "id-2", store.owner), (4, "id-10", None),
            (5, "id-11", None), (6, "id-30", None)]
        assert query(store.path, "SELECT log_id, reason FROM dead_letter") == [("id-20", "400 mapper")]
        assert "was deleted or replaced while in use" in caplog.text
        # The envelopes in memory still name their rows: delivery deletes them from the new file.
        await store.delivered(held + in_flight)
        assert [e.log_id for e in await store.claim_due(10)] == ["id-10", "id-11", "id-30"]
        assert (await store.statistics()).bytes == sum(len(envelope(n).document) for n in (10, 11, 30))
    finally:
        await store.close()


async def test_every_process_merges_what_it_held_into_the_one_new_file(tmp_path):
    path = str(tmp_path / "pending.db")
    first, second = SqliteStore(path), SqliteStore(path)
    await first.open()
    await second.open()
    try:
        await first.add([envelope(1)], leased=False)
        await second.add([envelope(2)], leased=False)
        delete_store_files(path)
        await first.add([envelope(3)], leased=False)  # makes the new file
        await second.add([envelope(4)], leased=False)  # finds it there and merges into it
        assert query(path, "SELECT id, log_id FROM pending ORDER BY id") == [
            (1, "id-1"), (2, "id-2"), (3, "id-3"), (4, "id-4")]
    finally:
        await second.close()
        await first.close()


async def test_a_row_whose_id_another_event_took_in_the_new_file_comes_in_with_a_new_id(tmp_path):
    # Process B committed into the old file as the files were deleted, after A had copied the old file
    # and written a row of its own, under the same id, into the new one.
    old, new = (SqliteStore(str(tmp_path / name)) for name in ("old.db", "new.db"))
    for store, log_ids in ((old, [1, 2]), (new, [1, 9])):
        await store.open()
        await store.add([envelope(n) for n in log_ids], leased=False)
        await store.claim_due(10)
        await store.close()
    owner = "0123456789abcdef0123456789abcdef"
    with sqlite3.connect(old.path) as source, sqlite3.connect(new.path, isolation_level=None) as target:
        for connection in (source, target):  # and rows of schema 3's in-flight table, the same way
            connection.execute("INSERT INTO in_flight (id, log_id, index_name, document, received_at, owner)"
                               " VALUES (1, ?, 'events_t_2026-11', x'7b7d', 1000.0, ?)",
                               ("flying" if connection is source else "landed", owner))
        assert copying.copy_rows(source, target) == (2, 0)
    # The strangers wait unowned in the pending table, to be replayed (their envelopes name other rows).
    assert query(new.path, "SELECT id, log_id, lease_owner FROM pending ORDER BY id") == [
        (1, "id-1", new.owner), (2, "id-9", new.owner), (3, "id-2", None), (4, "flying", None)]
    assert query(new.path, "SELECT id, log_id FROM in_flight") == [(1, "landed")]


async def test_an_envelope_never_settles_another_events_row_by_its_id(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"))
    await store.open()
    try:
        await store.add([envelope(1), envelope(2), envelope(3)], leased=False)
        held = await store.claim_due(10)
        with sqlite3.connect(store.path) as connection:
            connection.execute("UPDATE pending SET log_id = 'someone else' || id")
        await store.delivered(held[:1])
        await store.release(held[1:2])
        await store.dead_letter([Failure(held[2], "400")])
        assert query(store.path, "SELECT count(*) FROM pending WHERE lease_owner = ?", store.owner) == [(3,)]
        assert query(store.path, "SELECT count(*) FROM dead_letter") == [(0,)]
    finally:
        await store.close()


async def test_writes_fail_while_no_file_can_be_made_and_recover_once_one_can(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"))
    await store.open()
    try:
        await store.add([envelope(1)], leased=False)
        delete_store_files(store.path)
        os.mkdir(store.path)  # something in the way: SQLite cannot make the file
        with pytest.raises(StoreError):
            await store.add([envelope(2)], leased=False)
        os.rmdir(store.path)
        await store.add([envelope(3)], leased=False)
        assert query(store.path, "SELECT log_id FROM pending ORDER BY id") == [("id-1",), ("id-3",)]
    finally:
        await store.close()
