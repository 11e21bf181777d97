"""Durable mode's events in flight go to a journal per process (pending/journal.py), not to SQLite: an
accepted event costs about its record on disk. These tests fail on the layout before it (schema 3, a row
per event in the `in_flight` table)."""

import asyncio
import errno
import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from event_collector.envelope import Envelope
from event_collector.exceptions import StoreError, StoreFull
from event_collector.pending import Failure, SqliteStore, journal, schema
from support import Clock, REPO, query, write_store_of_schema_2

_OWNER_OF_MAIN = "0123456789abcdef0123456789abcdef"


def envelope(n: int, size: int = 0) -> Envelope:
    return Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d,"pad":"%s"}' % (n, b"x" * size), 1000.0 + n)



def new_store(path, **options) -> SqliteStore:
    return SqliteStore(str(path), max_attempts=3, backoff_base_seconds=0, backoff_max_seconds=0, **options)



def unsettled(store_path) -> list[str]:
    """The log_ids every journal beside the store holds unsettled, as a reader (adoption, stats) sees them."""
    return sorted(e.log_id for directory in journal.journal_directories(str(store_path))
                  for _, events in journal.unsettled_events(directory) for e in events)


# A process that accepts events in durable mode and is then killed: `kill -9` leaves its journal as it was.
_ACCEPT_AND_WAIT = """
import asyncio, sys
from event_collector.envelope import Envelope
from event_collector.pending import SqliteStore

async def main():
    store = SqliteStore(sys.argv[1])
    await store.open()
    held = [Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d}' % n, 1000.0 + n) for n in range(5)]
    await store.add(held, leased=True)
    await store.delivered(held[:2])  # delivered before the crash: settled in the journal
    print(store.owner, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def accepted_then_killed(store_path) -> str:
    """Run a real process that accepts id-0..4, delivers id-0 and id-1, and is killed; returns its owner."""
    process = subprocess.Popen([sys.executable, "-c", _ACCEPT_AND_WAIT, str(store_path)], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    owner = process.stdout.readline().strip()
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    assert len(owner) == 32, owner
    return owner


async def test_an_accepted_event_is_appended_to_the_journal_and_sqlite_is_not_written(tmp_path):
    store = new_store(tmp_path / "pending.db")
    await store.open()
    try:
        wal = store.path + "-wal"
        wal_before = os.path.getsize(wal)
        held = [envelope(1), envelope(2)]
        await store.add(held, leased=True)
        assert all(e.pending_id < 0 for e in held)
        assert unsettled(store.path) == ["id-1", "id-2"]
        await store.delivered(held)
        assert unsettled(store.path) == []
        # Neither accepting nor delivering wrote to SQLite.
        assert os.path.getsize(wal) == wal_before
        assert query(store.path, "SELECT count(*) FROM pending") == [(0,)]
        [segment] = os.listdir(store.journal.directory + "/")[-1:] and [
            name for name in os.listdir(store.journal.directory) if name.endswith(".seg")]
        # The records cost about the documents: two events and one settle record.
        size = os.path.getsize(os.path.join(store.journal.directory, segment))
        assert size <= sum(len(e.document) for e in held) + 2 * 80 + 30, size
    finally:
        await store.close()
    # A clean stop with everything settled leaves nothing behind.
    assert os.listdir(journal.directory_of(store.path)) == []


async def test_events_in_flight_that_must_wait_move_to_the_pending_table(tmp_path):
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
        assert unsettled(store.path) == ["id-3"]
        # Moved rows are the pending table's now: claimed, retried and counted as before.
        assert sorted(e.log_id for e in await store.claim_due(10)) == ["id-0", "id-1"]
        stats = await store.statistics()
        assert (stats.rows, stats.attempts_histogram) == (3, {0: 2, 1: 1})
        assert stats.bytes == sum(len(e.document) for e in (held[0], held[1], held[3]))
        assert stats.oldest_received_at == held[0].received_at
    finally:
        await store.close()


async def test_a_killed_processes_unsettled_events_are_adopted_into_pending_once(tmp_path):
    path = tmp_path / "shared.db"
    survivor, other = new_store(path), new_store(path)
    await survivor.open()
    await other.open()
    try:
        dead = accepted_then_killed(path)
        assert unsettled(path) == ["id-2", "id-3", "id-4"]
        # No heartbeat timeout to wait out: the kernel dropped the dead process's lock.
        assert await survivor.adopt_orphans() == 3
        assert await other.adopt_orphans() == 0  # a second adopter finds nothing: no event twice
        assert not os.path.exists(os.path.join(journal.directory_of(str(path)), dead))
        claimed = await survivor.claim_due(10) + await other.claim_due(10)
        assert sorted(e.log_id for e in claimed) == ["id-2", "id-3", "id-4"]
        assert all(e.attempts == 0 and e.pending_id > 0 for e in claimed)
        await survivor.delivered(claimed)
        assert (await survivor.statistics()).rows == 0
    finally:
        await other.close()
        await survivor.close()


async def test_a_live_process_keeps_its_journal_even_when_its_heartbeat_is_late(tmp_path):
    clock = Clock()
    slow, other = (new_store(tmp_path / "shared.db", clock=clock, owner_timeout_seconds=30) for _ in range(2))
    await slow.open()
    await other.open()
    try:
        held = [envelope(1), envelope(2)]
        await slow.add(held, leased=True)
        clock.now += 31  # its heartbeat is a dead process's by the clock: its lock says otherwise
        other._liveness.beat()
        assert await other.adopt_orphans() == 0
        assert await other.claim_due(10) == []
        await slow.delivered(held)
        assert unsettled(slow.path) == []
    finally:
        await other.close()
        await slow.close()


async def test_a_record_cut_by_a_crash_ends_what_is_read_and_nothing_else_is_lost(tmp_path):
    path = tmp_path / "shared.db"
    accepted_then_killed(path)
    [directory] = journal.journal_directories(str(path))
    [segment] = [os.path.join(directory, name) for name in os.listdir(directory) if name.endswith(".seg")]
    whole = os.path.getsize(segment)
    record = journal.format.record((0, 99, "id-99", "events_t_2026-11", b'{"n":99}', 1099.0))
    with open(segment, "ab") as file:  # the crash came in the middle of this write: it was never answered
        file.write(record[:len(record) // 2])
    assert unsettled(path) == ["id-2", "id-3", "id-4"]
    with open(segment, "r+b") as file:  # a checksum that fails ends the segment's records the same way
        file.truncate(whole)
        file.seek(whole)
        file.write(record[:-1] + bytes([record[-1] ^ 1]))
    assert unsettled(path) == ["id-2", "id-3", "id-4"]


async def test_a_failed_write_is_cut_off_and_answers_an_error_and_later_writes_are_read(tmp_path, monkeypatch):
    store = new_store(tmp_path / "pending.db")
    await store.open()
    try:
        await store.add([envelope(1)], leased=True)
        real_pwrite = os.pwrite

        def half_then_disk_full(fd, data, offset):  # the disk fills in the middle of the record
            if len(data) > 40:
                real_pwrite(fd, data[:len(data) // 2], offset)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(journal.writer.os, "pwrite", half_then_disk_full)
        refused = [envelope(2)]
        with pytest.raises(StoreError, match="No space left"):
            await store.add(refused, leased=True)
        assert refused[0].pending_id is None
        monkeypatch.setattr(journal.writer.os, "pwrite", real_pwrite)
        await store.add([envelope(3)], leased=True)
        assert unsettled(store.path) == ["id-1", "id-3"]
        assert store.backlog_bytes == len(envelope(1).document) + len(envelope(3).document)
    finally:
        await store.close()


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
async def test_a_deleted_journal_is_written_again_at_the_next_accept(tmp_path, caplog, synchronous):
    path = tmp_path / "pending.db"
    store = new_store(path, synchronous=synchronous)
    await store.open()
    held = [envelope(n) for n in range(3)]
    await store.add(held, leased=True)
    await store.delivered(held[:1])
    os.system(f"rm -rf '{journal.directory_of(str(path))}'")  # an operator's mistake under a running server
    # Noticed within half a second; what is accepted meanwhile goes to the unlinked files, and is copied too.
    accepted = []
    while "removed while in use" not in caplog.text:
        assert len(accepted) < 500, "the deleted journal was never noticed"
        one = [envelope(3 + len(accepted))]
        await store.add(one, leased=True)
        accepted += one
        await asyncio.sleep(0.01)
    assert len(accepted) >= 1
    assert unsettled(path) == sorted(["id-1", "id-2"] + [e.log_id for e in accepted])
    await store.delivered(held[1:])
    assert unsettled(path) == sorted(e.log_id for e in accepted)
    await store.close()  # those unsettled: left for the next process
    survivor = new_store(path)
    await survivor.open()
    try:
        assert await survivor.adopt_orphans() == len(accepted)
        assert sorted(e.log_id for e in await survivor.claim_due(1000)) == sorted(e.log_id for e in accepted)
    finally:
        await survivor.close()


async def test_segments_roll_and_go_once_settled(tmp_path):
    store = new_store(tmp_path / "pending.db", journal_segment_bytes=1000)
    await store.open()
    try:
        held = [envelope(n, size=300) for n in range(12)]
        for one in held:
            await store.add([one], leased=True)
        segments = lambda: sorted(n for n in os.listdir(store.journal.directory) if n.endswith(".seg"))
        assert len(segments()) >= 3
        await store.delivered(held[:-1])
        assert len(segments()) == 1  # only the active one, which holds the last event
        assert unsettled(store.path) == ["id-11"]
    finally:
        await store.close()


async def test_with_synchronous_full_concurrent_accepts_share_an_fdatasync(tmp_path):
    store = new_store(tmp_path / "pending.db", synchronous="FULL")
    await store.open()
    try:
        requests = [[envelope(n)] for n in range(200)]
        await asyncio.gather(*(store.add(r, leased=True) for r in requests))
        assert len(unsettled(store.path)) == 200
        assert 1 <= store.journal.syncs < 50, store.journal.syncs
    finally:
        await store.close()


async def test_the_cap_counts_events_in_flight_until_they_are_settled(tmp_path):
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
        # Events that move to pending stay counted once, by the pending table's trigger.
        await store.retry_later([Failure(e, "503") for e in held[5:]], count_attempt=True)
        stats = await store.statistics()
        assert store.backlog_bytes == stats.bytes == sum(len(e.document) for e in held[5:]) + len(
            envelope(100).document)
    finally:
        await store.close()


async def test_a_killed_processes_events_count_for_the_cap_once_adopted(tmp_path):
    path = tmp_path / "shared.db"
    survivor = new_store(path, max_bytes=20)  # the three adopted documents are 24 bytes
    await survivor.open()
    try:
        accepted_then_killed(path)
        survivor.check_room()  # not adopted yet: nobody counts them
        await survivor.adopt_orphans()
        with pytest.raises(StoreFull):
            survivor.check_room()
    finally:
        await survivor.close()


def make_store_of_main(path) -> None:
    """A store as schema 2 left it: one process's rows in flight, leased in `pending`, and rows waiting
    for a retry."""
    write_store_of_schema_2(path, [
        ("flying-1", "events_t_2026-11", b'{"n":1}', 1000.0, 0, 1000.0, _OWNER_OF_MAIN, None),
        ("waiting", "events_t_2026-11", b'{"n":22}', 1001.0, 2, 1500.0, None, "429 busy"),
        ("flying-2", "events_t_2026-11", b'{"n":333}', 1002.0, 0, 1002.0, _OWNER_OF_MAIN, None),
    ])


async def test_a_store_of_an_earlier_schema_opens_and_every_row_is_replayed(tmp_path):
    path = tmp_path / "pending.db"
    make_store_of_main(path)
    clock = Clock()
    store = new_store(path, clock=clock, owner_timeout_seconds=30)
    await store.open()
    try:
        assert query(path, "PRAGMA user_version") == [(schema.SCHEMA_VERSION,)]
        assert (await store.statistics()).bytes == 7 + 8 + 9  # the old counters carried over
        # New events go to the journal; the old rows stay where they were.
        new = [envelope(7)]
        await store.add(new, leased=True)
        assert new[0].pending_id < 0
        assert [e.log_id for e in await store.claim_due(10)] == ["waiting"]
        # The old process never beats in this directory: its leases are a dead owner's after the timeout.
        clock.now += 31
        store._liveness.beat()
        assert sorted(e.log_id for e in await store.claim_due(10)) == ["flying-1", "flying-2"]
        await store.delivered(new)
        assert unsettled(path) == []
    finally:
        await store.close()


async def test_rows_a_dead_process_left_in_the_in_flight_table_are_adopted(tmp_path):
    """A file of schema 3 from the version before the journal, whose process died with rows in flight."""
    clock = Clock()
    store = new_store(tmp_path / "pending.db", clock=clock, owner_timeout_seconds=30)
    await store.open()
    try:
        with sqlite3.connect(store.path) as connection:
            connection.executemany("INSERT INTO in_flight (log_id, index_name, document, received_at, owner)"
                                   " VALUES (?, 'events_t_2026-11', ?, ?, ?)",
                                   [(f"old-{n}", b'{"n":%d}' % n, 900.0 + n, _OWNER_OF_MAIN) for n in range(3)])
        assert (await store.statistics()).rows == 3
        clock.now += 31
        store._liveness.beat()
        assert sorted(e.log_id for e in await store.claim_due(10)) == ["old-0", "old-1", "old-2"]
        assert query(store.path, "SELECT count(*) FROM in_flight") == [(0,)]
    finally:
        await store.close()
