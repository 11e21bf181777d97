"""Durable mode's events in flight: an append-only journal per process, next to the SQLite store.

Every event durable mode accepts is written before the answer and forgotten once it is delivered,
moved to the pending table, or dead-lettered: nearly all of them are settled within seconds. A SQLite
commit writes whole pages (about 4 KB per commit, and at 350 events/s a commit carries about one event);
appending the event's record to a file costs about the record (bench/RESULTS.md, "Bytes written per
event"). The pending table keeps what waits; the journal only what this process holds in memory.

Layout: `<store path>-in-flight/<owner>/` holds a `lock` file, on which the process holds an exclusive
`flock` for as long as it runs, and segments named by their first sequence number (`<16 hex>.seg`). A
segment is a run of records, each `length (u32 LE) | crc32 (u32 LE) | payload`, the payload msgpack:

    [0, seq, log_id, index, document, received_at]    an accepted event
    [1, [seq, ...]]                                    events settled

One `pwrite` per accepted request at the segment's end. With SQLITE_SYNCHRONOUS=NORMAL that is all (the
page cache outlives `kill -9`, as SQLite's WAL does with NORMAL); with FULL an `fdatasync` follows before
the answer, one on a thread for every request that wrote meanwhile (group commit). Settle records are
never synced: a lost one means an event delivered again, with the same `_id`, answered 409. A reader stops
at a segment's first record that is short or fails its checksum: a write cut by a crash, never answered.

A segment rolls at `segment_bytes`; a rolled segment whose events are all settled is unlinked. At a clean
stop every event is settled and the directory goes. When the process dies the kernel drops its lock: the
next process to take it (`orphans`) reads the events not settled into the pending table and removes the
directory. A live process holds its lock however slow it is, so its journal is never adopted.
"""

from __future__ import annotations

import asyncio
import bisect
import errno
import fcntl
import logging
import os
import shutil
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import msgspec

from ..envelope import Envelope
from ..exceptions import StoreError

log = logging.getLogger(__name__)

SEGMENT_BYTES = 8 << 20
_HEADER = struct.Struct("<II")
_EVENT, _SETTLED = 0, 1
_LOCK = "lock"
# How often a write first checks that the active segment still has a name (the directory was not deleted).
# What is written meanwhile is not lost: the rescue copies it from the files still open.
_LINK_CHECK_SECONDS = 0.5
# A hidden directory (a journal being made) older than this was left by a process that died making it.
_ABANDONED_AFTER_SECONDS = 60.0
_SUFFIX = ".seg"
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def directory_of(store_path: str) -> str:
    return store_path + "-in-flight"


@dataclass
class JournalEvent:
    seq: int
    log_id: str
    index: str
    document: bytes
    received_at: float

    def envelope(self) -> Envelope:
        return Envelope(self.index, self.log_id, self.document, self.received_at)


@dataclass
class _Segment:
    first_seq: int
    path: str
    fd: int
    size: int = 0
    live: set[int] = field(default_factory=set)
    # A write failed and its bytes could not be cut off: nothing more is written here.
    broken: bool = False


class Journal:
    """One process's journal. Not thread-safe: the event loop's thread writes it."""

    def __init__(self, store_path: str, owner: str, *, sync: bool, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = directory_of(store_path)
        self.owner = owner
        self.directory = os.path.join(self.root, owner)
        self.sync = sync
        self._segment_bytes = segment_bytes
        self._lock_fd: int | None = None
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []
        self._next_seq = 1
        self._next_link_check = 0.0
        # Group fdatasync (sync=True): futures waiting for the next round, and segments written since the last.
        self._executor: ThreadPoolExecutor | None = None
        self._waiting: list[asyncio.Future] = []
        self._unsynced: dict[int, _Segment] = {}
        self._new_file = False
        self._syncing = False
        # fdatasync rounds run: the measure of how well syncs are grouped.
        self.syncs = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Make this process's directory and take its lock. The directory is made under a hidden name and
        renamed into place with the lock held, so that no adopter ever sees it unlocked."""
        os.makedirs(self.root, exist_ok=True)
        making = os.path.join(self.root, f".{self.owner}.new")
        os.makedirs(making, exist_ok=True)
        lock_fd = os.open(os.path.join(making, _LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(making, self.directory)
        if self.sync:
            _fsync_directory(self.root)
        self._lock_fd = lock_fd

    def close(self) -> None:
        """Remove the directory when every event is settled; otherwise leave it for adoption. Then drop the
        lock."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        unsettled = self.unsettled
        for segment in self._segments:
            os.close(segment.fd)
        self._segments, self._firsts = [], []
        if unsettled:
            log.warning("%d events in flight were not settled at the stop: journal %s is left for the next "
                        "process to replay", unsettled, self.directory)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing ---------------------------------------------------------------------------------

    def write_events(self, envelopes: Sequence[Envelope]) -> range:
        """Append the envelopes' records in one write; returns their sequence numbers. Raises StoreError
        when the write fails, having cut off what it wrote."""
        segment = self._segment_for_events()
        first = self._next_seq
        self._append(segment, b"".join(_event_record(seq, envelope) for seq, envelope in enumerate(envelopes, first)))
        seqs = range(first, first + len(envelopes))
        self._next_seq = seqs.stop
        segment.live.update(seqs)
        return seqs

    def wait_until_durable(self) -> asyncio.Future | None:
        """With sync, a future done once everything written so far is on disk (one fdatasync for all who
        wait meanwhile); without, None: written is kept."""
        if not self.sync:
            return None
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if not self._syncing:
            self._start_sync_round()
        return future

    def settle(self, seqs: Sequence[int]) -> None:
        """These events are delivered, or kept elsewhere now: forget them, and unlink every rolled segment
        left with none. Written unsynced and best effort: a settle record lost only means a redelivery."""
        if not seqs or not self._segments:
            return
        for seq in seqs:
            position = bisect.bisect_right(self._firsts, seq) - 1
            if position >= 0:
                self._segments[position].live.discard(seq)
        active = self._segments[-1]
        if not active.broken:
            try:
                self._append(active, _record((_SETTLED, list(seqs))))
            except StoreError as exc:
                log.warning("could not note %d settled events in the journal (they would be delivered again "
                            "after a crash): %s", len(seqs), exc)
        self._drop_settled_segments()

    @property
    def unsettled(self) -> int:
        return sum(len(segment.live) for segment in self._segments)

    def _segment_for_events(self) -> _Segment:
        if self._lock_fd is None:
            raise StoreError("the in-flight journal is not open")
        if self._segments:
            active = self._segments[-1]
            now = time.monotonic()
            if now >= self._next_link_check:  # an fstat per write was 3% of a durable request's CPU
                self._next_link_check = now + _LINK_CHECK_SECONDS
                if os.fstat(active.fd).st_nlink == 0:
                    self._rescue()
                    active = self._segments[-1]
            if active.size < self._segment_bytes and not active.broken:
                return active
        segment = self._new_segment(self._next_seq)
        self._drop_settled_segments()
        return segment

    def _new_segment(self, first_seq: int) -> _Segment:
        path = os.path.join(self.directory, f"{first_seq:016x}{_SUFFIX}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot make in-flight journal segment {path}: {exc}") from exc
        segment = _Segment(first_seq, path, fd)
        self._segments.append(segment)
        self._firsts.append(first_seq)
        if self.sync:  # the new file's name must reach the disk with its first records
            self._new_file = True
        return segment

    def _append(self, segment: _Segment, data: bytes) -> None:
        try:
            written = os.pwrite(segment.fd, data, segment.size)
            while written < len(data):  # a short write: disk full, or a signal; what is left fails or goes on
                more = os.pwrite(segment.fd, data[written:], segment.size + written)
                if more == 0:
                    raise OSError(errno.ENOSPC, "no space left on device")
                written += more
        except OSError as exc:
            try:
                os.ftruncate(segment.fd, segment.size)
            except OSError:
                segment.broken = True  # the next write goes to a new segment: no record after a torn one
            raise StoreError(f"in-flight journal {segment.path} write failed: {exc}") from exc
        segment.size += len(data)
        if self.sync:
            self._unsynced[segment.fd] = segment

    def _drop_settled_segments(self) -> None:
        """Unlink every segment but the active one that holds no unsettled event."""
        keep = [s for s in self._segments[:-1] if s.live] + self._segments[-1:]
        for segment in self._segments[:-1]:
            if not segment.live:
                self._unsynced.pop(segment.fd, None)
                os.close(segment.fd)
                _unlink(segment.path)
        self._segments = keep
        self._firsts = [s.first_seq for s in keep]

    def _rescue(self) -> None:
        """The directory was deleted under the running process (segments unlinked, lock gone): what
        it wrote would be lost with it. Make the directory again and copy the events not settled into a
        new segment from the files still open, their sequence numbers kept."""
        log.error("in-flight journal %s was deleted while in use: writing its %d unsettled events again",
                  self.directory, self.unsettled)
        old_segments = self._segments
        old_lock = self._lock_fd
        self._segments, self._firsts, self._lock_fd = [], [], None
        self.open()
        if old_lock is not None:
            os.close(old_lock)
        live = {seq for segment in old_segments for seq in segment.live}
        records = [event for segment in old_segments for event in _read_events(segment.fd)[0]
                   if event.seq in live]
        segment = self._new_segment(records[0].seq if records else self._next_seq)
        self._append(segment, b"".join(_event_record(event.seq, event) for event in records))
        segment.live.update(e.seq for e in records)
        if self.sync:  # the copies replace files that are gone: on disk before anything else is answered
            os.fdatasync(segment.fd)
            _fsync_directory(self.directory)
        for old in old_segments:
            os.close(old.fd)
            self._unsynced.pop(old.fd, None)

    # -- group fdatasync -------------------------------------------------------------------------

    def _start_sync_round(self) -> None:
        loop = asyncio.get_running_loop()
        waiting, self._waiting = self._waiting, []
        # Copies of the descriptors: a segment may be settled and closed while the thread syncs it.
        fds = [os.dup(segment.fd) for segment in self._unsynced.values()]
        new_file, self._new_file = self._new_file, False
        self._unsynced.clear()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="in-flight-journal")
        self._syncing = True
        round_ = self._executor.submit(_sync_all, fds, self.directory if new_file else None)
        round_.add_done_callback(lambda done: loop.call_soon_threadsafe(self._sync_round_done, done, waiting))
        self.syncs += 1

    def _sync_round_done(self, done, waiting: list[asyncio.Future]) -> None:
        self._syncing = False
        error = done.exception()
        for future in waiting:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(StoreError(f"in-flight journal {self.directory} fdatasync failed: {error}"))
        if self._waiting:
            self._start_sync_round()


# -- reading, for adoption and statistics ----------------------------------------------------------


def _event_record(seq: int, event: Envelope | JournalEvent) -> bytes:
    return _record((_EVENT, seq, event.log_id, event.index, event.document, event.received_at))


def _record(payload: object) -> bytes:
    data = _encode(payload)
    return _HEADER.pack(len(data), zlib.crc32(data)) + data


def _read_events(source: int | str) -> tuple[list[JournalEvent], set[int]]:
    """A segment's events and the sequence numbers it says are settled, up to its first bad record."""
    if isinstance(source, int):
        data = os.pread(source, os.fstat(source).st_size, 0)
    else:
        with open(source, "rb") as file:
            data = file.read()
    events: list[JournalEvent] = []
    settled: set[int] = set()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, checksum = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size:offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != checksum:
            break  # a write cut short: nothing after it was ever answered
        try:
            record = _decode(payload)
            if record[0] == _EVENT:
                _, seq, log_id, index, document, received_at = record
                events.append(JournalEvent(seq, log_id, index, document, received_at))
            elif record[0] == _SETTLED:
                settled.update(record[1])
        except (msgspec.DecodeError, ValueError, TypeError, IndexError) as exc:
            log.error("in-flight journal %s: a record at byte %d cannot be read: %s", source, offset, exc)
            break
        offset += _HEADER.size + length
    return events, settled


def _segment_paths(directory: str) -> list[str]:
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(_SUFFIX))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in names]


def unsettled_events(directory: str) -> Iterator[tuple[str, list[JournalEvent]]]:
    """Each segment of a journal directory, in order, with its events that no segment says are settled."""
    paths = _segment_paths(directory)
    read = [(path, *_read_events_or_none(path)) for path in paths]
    settled = set().union(*(done for _, _, done in read)) if read else set()
    for path, events, _ in read:
        yield path, [event for event in events if event.seq not in settled]


def _read_events_or_none(path: str) -> tuple[list[JournalEvent], set[int]]:
    try:
        return _read_events(path)
    except FileNotFoundError:  # adopted and removed meanwhile
        return [], set()


def journal_directories(store_path: str) -> list[str]:
    """Every process's journal directory, live or dead."""
    root = directory_of(store_path)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return [os.path.join(root, name) for name in sorted(names) if not name.startswith(".")]


class Orphan:
    """A dead process's journal, locked by the process adopting it."""

    def __init__(self, directory: str, lock_fd: int) -> None:
        self.directory = directory
        self._lock_fd = lock_fd

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def release(self) -> None:
        os.close(self._lock_fd)


def orphans(store_path: str, own: str) -> Iterator[Orphan]:
    """The journals of processes that are gone, each locked for the caller until `release`. Hidden
    directories are journals being made: one older than a minute whose lock is free was left by a process
    that died making it, and holds no event; it is removed."""
    root = directory_of(store_path)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for name in names:
        if name in (own, f".{own}.new"):
            continue
        directory = os.path.join(root, name)
        if name.startswith(".") and not _older_than(directory, _ABANDONED_AFTER_SECONDS):
            continue  # a journal being made: its lock may not be taken yet
        try:
            lock_fd = os.open(os.path.join(directory, _LOCK), os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            continue  # being made or being removed
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            continue  # alive
        orphan = Orphan(directory, lock_fd)
        if name.startswith("."):
            orphan.remove()
            orphan.release()
            continue
        yield orphan


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime > seconds
    except FileNotFoundError:
        return False


def _sync_all(fds: list[int], directory: str | None) -> None:
    try:
        for fd in fds:
            os.fdatasync(fd)
        if directory is not None:
            _fsync_directory(directory)
    finally:
        for fd in fds:
            os.close(fd)


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
