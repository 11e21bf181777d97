"""The journal's own faults (issue 17): a segment removed while in use, a settle that the SQL cannot follow,
settle records outliving their segment, a segment that cannot be unlinked, a failed sync round, and what a
FULL answer waits for. Each failed on the journal before this round."""

import asyncio
import errno
import fcntl
import os

import pytest

from event_collector.exceptions import StoreError
from event_collector.pending import Failure, SqliteStore, journal
from support import wait_until_async

PAD = 300  # an event's record is then about 330 bytes: three to a 1,000-byte segment


def envelope(n: int, size: int = 0):
    from event_collector.envelope import Envelope

    return Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d,"pad":"%s"}' % (n, b"x" * size), 1000.0 + n)


def unsettled(store_path) -> list[str]:
    return sorted(e.log_id for directory in journal.journal_directories(str(store_path))
                  for _, events in journal.unsettled_events(directory) for e in events)


def segments(store) -> list[str]:
    return sorted(n for n in os.listdir(store.journal.directory) if n.endswith(".seg"))


@pytest.fixture
async def store(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"), journal_segment_bytes=1000)
    await store.open()
    yield store
    await store.close()


async def test_a_removed_active_segment_is_written_again_and_the_next_accept_is_kept(store):
    held = [envelope(n) for n in range(3)]
    await store.add(held, leased=True)
    os.unlink(os.path.join(store.journal.directory, segments(store)[-1]))
    # The directory and its lock are still there: the rescue must not take the segment for the directory.
    more = [envelope(3)]
    await store.add(more, leased=True)
    await wait_until_async(lambda: unsettled(store.path) == ["id-0", "id-1", "id-2", "id-3"],
                           message="the removed segment's events written again")
    await store.add([envelope(4)], leased=True)
    assert unsettled(store.path) == ["id-0", "id-1", "id-2", "id-3", "id-4"]


async def test_a_removed_older_segment_is_noticed_without_traffic(store):
    held = [envelope(n, PAD) for n in range(9)]
    for one in held:
        await store.add([one], leased=True)
    assert len(segments(store)) >= 3
    os.unlink(os.path.join(store.journal.directory, segments(store)[0]))
    await wait_until_async(lambda: unsettled(store.path) == sorted(e.log_id for e in held),
                           message="the older segment's events written again, no write since")


async def test_a_removed_lock_file_is_made_again_and_held(store):
    await store.add([envelope(1)], leased=True)
    lock = os.path.join(store.journal.directory, "lock")
    os.unlink(lock)
    await wait_until_async(lambda: os.path.exists(lock), message="the lock file made again")
    fd = os.open(lock, os.O_RDWR)
    try:  # held by the store: no adopter can take this live journal
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


async def test_a_new_segment_whose_first_write_tears_is_never_reopened_and_unlinked(store, monkeypatch):
    await store.add([envelope(1, PAD), envelope(2, PAD), envelope(3, PAD)], leased=True)  # fills the first
    real_pwrite, real_ftruncate = os.pwrite, os.ftruncate

    def torn(fd, data, offset):
        real_pwrite(fd, data[:10], offset)
        raise OSError(errno.EIO, "Input/output error")

    def cannot_cut(fd, length):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "pwrite", torn)
    monkeypatch.setattr(os, "ftruncate", cannot_cut)
    with pytest.raises(StoreError):
        await store.add([envelope(4)], leased=True)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    monkeypatch.setattr(os, "ftruncate", real_ftruncate)
    await store.add([envelope(5)], leased=True)
    await store.delivered([])  # nothing settled: nothing may be unlinked
    assert unsettled(store.path) == ["id-1", "id-2", "id-3", "id-5"]


async def test_delivered_settles_the_journal_even_when_the_sql_fails(store, monkeypatch):
    await store.add([envelope(1)], leased=False)
    [stored] = await store.claim_due(10)
    fresh = [envelope(2), envelope(3)]
    await store.add(fresh, leased=True)

    async def disk_full(*args, **kwargs):
        raise StoreError("database or disk is full")

    monkeypatch.setattr(store.engine, "write", disk_full)
    with pytest.raises(StoreError):
        await store.delivered([stored] + fresh)
    assert store.journal.unsettled == 0
    assert unsettled(store.path) == []
    assert store.backlog_bytes == len(stored.document)  # only the pending row is still counted


async def test_settle_records_outlive_the_segment_that_carries_them(store):
    first = [envelope(n, PAD) for n in range(3)]  # the first segment
    for one in first:
        await store.add([one], leased=True)
    second = [envelope(3, PAD)]
    await store.add(second, leased=True)  # starts the second segment
    await store.delivered(first[1:])  # their settle record goes to the second segment
    await store.delivered(second)
    later = [envelope(n, PAD) for n in range(4, 12)]
    for one in later:
        await store.add([one], leased=True)
        await store.delivered([one])  # their segments hold nothing unsettled: they would go
    # id-0 pins the first segment; whatever went, a reader after a crash sees exactly what is unsettled.
    assert unsettled(store.path) == ["id-0"]
    await store.delivered(first[:1])
    await store.add([envelope(12)], leased=True)
    assert unsettled(store.path) == ["id-12"]
    assert len(segments(store)) == 1


async def test_a_segment_that_cannot_be_unlinked_stays_and_no_descriptor_is_closed_twice(store, monkeypatch):
    held = [envelope(n, PAD) for n in range(6)]
    for one in held:
        await store.add([one], leased=True)
    real_unlink = os.unlink

    def refused(path, *args, **kwargs):
        if path.endswith(".seg"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refused)
    await store.delivered(held[:3])  # settle never raises, whatever the unlink says
    assert len(segments(store)) >= 2
    bystander = os.open(os.devnull, os.O_RDONLY)  # likely takes a number a closed segment freed
    try:
        monkeypatch.setattr(os, "unlink", real_unlink)
        await store.delivered(held[3:])
        await store.add([envelope(7)], leased=True)
        os.fstat(bystander)  # still open: nobody closed it under us
    finally:
        os.close(bystander)
    assert unsettled(store.path) == ["id-7"]


async def test_a_sync_round_that_cannot_start_refuses_its_requests_and_strands_none(tmp_path, monkeypatch):
    store = SqliteStore(str(tmp_path / "pending.db"), synchronous="FULL")
    await store.open()
    try:
        def no_descriptors(fd):
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(os, "dup", no_descriptors)
        refused = await asyncio.wait_for(asyncio.gather(*(store.add([envelope(n)], leased=True) for n in range(3)),
                                                        return_exceptions=True), 5)
        assert all(isinstance(answer, StoreError) for answer in refused), refused
        assert store.journal.unsettled == 0  # never answered 2xx: settled, the clients send them again
        monkeypatch.undo()
        await asyncio.wait_for(store.add([envelope(9)], leased=True), 5)
        assert unsettled(store.path) == ["id-9"]
    finally:
        await store.close()


async def test_a_full_answer_waits_for_the_fdatasync_of_its_segment_and_of_a_new_segments_name(tmp_path,
                                                                                               monkeypatch):
    store = SqliteStore(str(tmp_path / "pending.db"), synchronous="FULL", journal_segment_bytes=1000)
    await store.open()
    synced: list[tuple[str, int]] = []
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_fdatasync, real_fsync_directory = os.fdatasync, journal.sync.fsync_directory

    def held_fdatasync(fd):
        asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(10)
        synced.append(("file", os.fstat(fd).st_ino))
        real_fdatasync(fd)

    def recorded_fsync_directory(path):
        synced.append(("directory", os.stat(path).st_ino))
        real_fsync_directory(path)

    monkeypatch.setattr(os, "fdatasync", held_fdatasync)
    monkeypatch.setattr(journal.sync, "fsync_directory", recorded_fsync_directory)
    try:
        answer = asyncio.ensure_future(store.add([envelope(1, PAD)], leased=True))
        await asyncio.sleep(0.2)
        assert not answer.done() and synced == []  # written, not yet on disk: not answered
        gate.set()
        await asyncio.wait_for(answer, 5)
        [name] = segments(store)
        segment_inode = os.stat(os.path.join(store.journal.directory, name)).st_ino
        directory_inode = os.stat(store.journal.directory).st_ino
        assert synced == [("file", segment_inode), ("directory", directory_inode)]
        for n in range(2, 6):
            synced.clear()
            before = segments(store)
            await store.add([envelope(n, PAD)], leased=True)
            if segments(store) != before:  # this record started a new segment: its name was synced first
                newest = os.stat(os.path.join(store.journal.directory, segments(store)[-1])).st_ino
                assert synced == [("file", newest), ("directory", directory_inode)], synced
                break
        else:
            pytest.fail("no new segment was made")
    finally:
        await store.close()


async def test_one_event_left_unsettled_pins_a_bounded_number_of_segments(store):
    pinned = [envelope(0, PAD)]
    await store.add(pinned, leased=True)  # held in memory for long: its segment may not go
    for n in range(1, 60):
        one = [envelope(n, PAD)]
        await store.add(one, leased=True)
        await store.delivered(one)
        assert len(segments(store)) <= 6, segments(store)  # compacted, not one more file per roll
    assert unsettled(store.path) == ["id-0"]
    await store.delivered(pinned)
    await store.add([envelope(99)], leased=True)
    assert unsettled(store.path) == ["id-99"]


async def test_a_compaction_that_cannot_unlink_the_oldest_segment_keeps_the_settle_records_after_it(store,
                                                                                                 monkeypatch):
    first = [envelope(n, PAD) for n in range(3)]
    for one in first:
        await store.add([one], leased=True)
    second = [envelope(3, PAD)]
    await store.add(second, leased=True)  # the second segment: the next settle record goes there
    await store.dead_letter([Failure(first[1], "400 mapper"), Failure(first[2], "400 mapper")])
    real_unlink, refused = os.unlink, []

    def oldest_refused_once(path, *args, **kwargs):
        if path.endswith("0000000000000001.seg") and not refused:
            refused.append(path)
            raise OSError(errno.EIO, "Input/output error", path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", oldest_refused_once)
    await store.delivered(second)
    for n in range(4, 40):  # settled segments pile up behind id-0 until the journal compacts
        one = [envelope(n, PAD)]
        await store.add(one, leased=True)
        await store.delivered(one)
    assert refused
    # After a crash now, the dead-lettered events must not come back from the segment that stayed.
    assert unsettled(store.path) == ["id-0"]
    await store.delivered(first[:1])
    await store.add([envelope(99)], leased=True)
    assert unsettled(store.path) == ["id-99"]


async def test_a_failed_fdatasync_refuses_those_waiting_for_the_next_round_too(tmp_path, monkeypatch):
    store = SqliteStore(str(tmp_path / "pending.db"), synchronous="FULL")
    await store.open()
    loop = asyncio.get_running_loop()
    gate, calls, real_fdatasync = asyncio.Event(), [], os.fdatasync

    def first_fails(fd):
        calls.append(fd)
        if len(calls) == 1:
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result(10)
            raise OSError(errno.EIO, "Input/output error")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", first_fails)
    try:
        first = asyncio.ensure_future(store.add([envelope(1)], leased=True))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(store.add([envelope(2)], leased=True))  # waits for the next round
        await asyncio.sleep(0.1)
        gate.set()
        answers = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)
        # The next round's fdatasync of the same file would succeed though the failed writeback lost pages.
        assert all(isinstance(answer, StoreError) for answer in answers), answers
        await asyncio.wait_for(store.add([envelope(3)], leased=True), 5)
        assert unsettled(store.path) == ["id-3"]
        assert "0000000000000001.seg" not in segments(store)  # a new file, not after the failed writeback
    finally:
        await store.close()


async def test_a_settle_after_a_torn_record_goes_to_a_new_segment(store, monkeypatch):
    held = [envelope(1), envelope(2)]
    await store.add(held, leased=True)
    real_pwrite = os.pwrite
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: real_pwrite(fd, data[:5], offset) and (
        _ for _ in ()).throw(OSError(errno.EIO, "Input/output error")))
    monkeypatch.setattr(os, "ftruncate", lambda fd, length: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    with pytest.raises(StoreError):
        await store.add([envelope(3)], leased=True)
    monkeypatch.undo()
    await store.dead_letter([Failure(held[0], "400 mapper")])  # and nothing more arrives
    assert unsettled(store.path) == ["id-2"]


async def test_a_segment_removed_just_before_the_stop_is_in_the_journal_left_behind(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"))
    await store.open()
    await store.add([envelope(1), envelope(2)], leased=True)
    os.unlink(os.path.join(store.journal.directory, segments(store)[-1]))
    await store.close()  # at once, before the half-second check
    assert unsettled(store.path) == ["id-1", "id-2"]
