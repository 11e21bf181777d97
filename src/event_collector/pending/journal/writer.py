"""One process's journal: sequence numbers, the live events of each segment, rolling, unlinking, and the
rescue of files someone removed while the process runs."""

from __future__ import annotations

import asyncio
import bisect
import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

from ...envelope import Envelope
from ...exceptions import StoreError
from .format import event_record, read_segment, segment_name, settled_record
from .place import Place, directory_of, fsync_directory
from .sync import GroupSync

log = logging.getLogger(__name__)

SEGMENT_BYTES = 8 << 20
# Errors that say the disk (or the process's share of it) is full, rather than that it failed.
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass
class _Segment:
    number: int
    # The lowest sequence number it may hold (a rescue's copy holds events older than its number).
    first_seq: int
    path: str
    fd: int
    size: int = 0
    live: set[int] = field(default_factory=set)
    # No more events go here: it reached its size, the disk was full, or a failed write could not be cut off.
    rolled: bool = False
    # A failed write could not be cut off: nothing more may be written after the torn record.
    torn: bool = False


class Journal:
    """One process's journal. Not thread-safe: the event loop's thread writes it."""

    def __init__(self, store_path: str, owner: str, *, sync: bool, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = directory_of(store_path)
        self.owner = owner
        self.place = Place(self.root, owner, sync=sync)
        self.directory = self.place.directory
        self.sync = sync
        self._segment_bytes = segment_bytes
        self._segments: list[_Segment] = []
        self._firsts: list[int] = []
        self._next_seq = 1
        self._next_number = 1
        # Settled events whose settle record could not be written yet (disk full): written with the next.
        self._unwritten_settles: list[int] = []
        # Part of the journal was removed and could not be made again yet: writes refuse until it is.
        self._rescue_failed: str | None = None
        self._group = GroupSync(self.directory)

    @property
    def syncs(self) -> int:
        return self._group.rounds

    @property
    def unsettled(self) -> int:
        return sum(len(segment.live) for segment in self._segments)

    def open(self) -> None:
        self.place.make()

    def close(self) -> None:
        """Remove the directory when every event is settled; otherwise leave it for adoption. Then drop the
        lock."""
        self._group.close()
        unsettled = self.unsettled
        for segment in self._segments:
            os.close(segment.fd)
        self._segments, self._firsts = [], []
        if unsettled:
            log.warning("%d events in flight were not settled at the stop: journal %s is left for the next "
                        "process to replay", unsettled, self.directory)
        self.place.release(remove=not unsettled)

    # -- writing ---------------------------------------------------------------------------------

    def write_events(self, envelopes: Sequence[Envelope]) -> range:
        """Append the envelopes' records in one write; returns their sequence numbers. Raises StoreError
        when the write fails, having cut off what it wrote. A write that finds the disk full rolls the
        segment, so that it is unlinked once its events are settled, and tries once more where that freed
        room."""
        try:
            return self._write_events(envelopes)
        except _OutOfSpace as exc:
            if not self._make_room():
                raise StoreError(str(exc)) from exc
        try:
            return self._write_events(envelopes)
        except _OutOfSpace as exc:
            raise StoreError(str(exc)) from exc

    def _make_room(self) -> bool:
        """After a write found the disk full: start a new segment if the active one rolled, and unlink the
        settled ones before it. Whether any was unlinked."""
        if self._segments[-1].rolled:
            self._new_segment(self._next_seq)
        return self._drop_settled_segments() > 0

    def _write_events(self, envelopes: Sequence[Envelope]) -> range:
        segment = self._segment_for_events()
        first = self._next_seq
        records = b"".join(event_record(seq, envelope) for seq, envelope in enumerate(envelopes, first))
        settles, self._unwritten_settles = self._unwritten_settles, []
        try:
            self._append(segment, (settled_record(settles) if settles else b"") + records)
        except StoreError:
            self._unwritten_settles = settles + self._unwritten_settles
            raise
        seqs = range(first, first + len(envelopes))
        self._next_seq = seqs.stop
        segment.live.update(seqs)
        return seqs

    def wait_until_durable(self) -> asyncio.Future | None:
        """With sync, a future done once everything written so far is on disk (one fdatasync for all who
        wait meanwhile); without, None: written is kept."""
        return self._group.wait() if self.sync else None

    def settle(self, seqs: Sequence[int]) -> None:
        """These events are delivered, or kept elsewhere now: forget them, and unlink the segments no event
        pins. Never raises. The settle record is written unsynced (a lost one only means a redelivery,
        answered 409); one that cannot be written now is written with the next."""
        if not seqs or not self._segments:
            return
        for seq in seqs:
            position = bisect.bisect_right(self._firsts, seq) - 1
            if position >= 0:
                self._segments[position].live.discard(seq)
        self._unwritten_settles.extend(seqs)
        active = self._segments[-1]
        if not active.torn:
            settles, self._unwritten_settles = self._unwritten_settles, []
            try:
                self._append(active, settled_record(settles))
            except StoreError as exc:
                self._unwritten_settles = settles
                log.warning("could not note %d settled events in the journal yet: %s", len(settles), exc)
        self._drop_settled_segments()

    def _segment_for_events(self, after_rescue: bool = False) -> _Segment:
        if self.place.lock_fd is None:
            raise StoreError("the in-flight journal is not open")
        if self._rescue_failed is not None:
            self.check()
            if self._rescue_failed is not None:
                raise StoreError(f"in-flight journal {self.directory}: {self._rescue_failed}")
        if self._segments:
            active = self._segments[-1]
            if active.size < self._segment_bytes and not active.rolled:
                return active
            active.rolled = True
        try:
            segment = self._new_segment(self._next_seq)
        except StoreError:
            if after_rescue:
                raise
            self.check()  # the directory may be gone since the last check: made whole, then once more
            return self._segment_for_events(after_rescue=True)
        self._drop_settled_segments()
        return segment

    def _new_segment(self, first_seq: int) -> _Segment:
        path = os.path.join(self.directory, segment_name(self._next_number))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot make in-flight journal segment {path}: {exc}") from exc
        self._next_number += 1
        segment = _Segment(self._next_number - 1, first_seq, path, fd)
        self._segments.append(segment)
        self._firsts.append(first_seq)
        if self.sync:  # the new file's name must reach the disk with its first records
            self._group.made_file()
        return segment

    def _append(self, segment: _Segment, data: bytes) -> None:
        try:
            written = os.pwrite(segment.fd, data, segment.size)
            while written < len(data):  # a short write: disk full, or a signal; what is left fails or goes on
                more = os.pwrite(segment.fd, data[written:], segment.size + written)
                if more == 0:
                    raise OSError(errno.ENOSPC, "No space left on device")
                written += more
        except OSError as exc:
            try:
                os.ftruncate(segment.fd, segment.size)
            except OSError:
                segment.torn = segment.rolled = True  # no record may follow a torn one
            message = f"in-flight journal {segment.path} write failed: {exc}"
            if exc.errno in _OUT_OF_SPACE:
                if segment.size:  # a segment that holds something rolls, to be unlinked once settled
                    segment.rolled = True
                raise _OutOfSpace(message) from exc
            raise StoreError(message) from exc
        segment.size += len(data)
        if self.sync:
            self._group.wrote(segment.fd)

    def _drop_settled_segments(self) -> int:
        """Unlink the oldest segments, but never the active one, while they hold no unsettled event; returns
        how many went. Only the oldest: a segment carries settle records for events in those before it, so
        it must outlive every segment whose events it settles. A segment that cannot be unlinked stays, with
        those after it, and is tried again at the next settle."""
        dropped = 0
        while len(self._segments) > 1 and not self._segments[0].live:
            segment = self._segments[0]
            try:
                os.unlink(segment.path)
            except FileNotFoundError:
                pass  # removed by someone else: the watch makes the journal whole again
            except OSError as exc:
                log.warning("cannot unlink the settled in-flight journal segment %s: %s", segment.path, exc)
                break
            self._close(segment)
            del self._segments[0], self._firsts[0]
            dropped += 1
        if dropped:  # settle records for events in unlinked segments need no writing any more
            self._unwritten_settles = [seq for seq in self._unwritten_settles if seq >= self._firsts[0]]
        return dropped

    def _close(self, segment: _Segment) -> None:
        self._group.forget(segment.fd)
        os.close(segment.fd)

    # -- what someone removed ----------------------------------------------------------------------

    def check(self) -> None:
        """Make the journal whole again if part of it was removed from the file system while in use: its
        directory, its lock file, or a segment (run by the store every half second, traffic or not). Every
        unsettled event is still readable from the descriptors this process holds; they are written into
        one new segment, and the old segments are unlinked. Never raises: a rescue that fails (a full disk)
        is tried again at the next check, and writes are refused (503) until it succeeds."""
        if self.place.lock_fd is None:
            return
        lost = self.place.lost() + [os.path.basename(s.path) for s in self._segments if _unlinked(s.fd)]
        if not lost and self._rescue_failed is None:
            return
        try:
            self._rescue(lost)
        except OSError as exc:
            first = self._rescue_failed is None
            self._rescue_failed = f"removed while in use, and not made again yet: {exc}"
            if first:
                log.error("in-flight journal %s could not be made again (tried again every check; new events "
                          "are refused until it is): %s", self.directory, exc)
            return
        self._rescue_failed = None

    def _rescue(self, lost: list[str]) -> None:
        live = {seq for segment in self._segments for seq in segment.live}
        log.error("in-flight journal %s: %s removed while in use; writing its %d unsettled events again",
                  self.directory, ", ".join(lost) or "an earlier part", len(live))
        if self.place.lost():
            self.place.restore()
        events = [event for segment in self._segments for event in read_segment(segment.fd)[0] if event.seq in live]
        copy = self._new_segment_or_oserror(min(live, default=self._next_seq))
        try:
            self._append(copy, b"".join(event_record(event.seq, event) for event in events))
            if self.sync:  # the copies replace files that are gone: on disk before anything else is answered
                os.fdatasync(copy.fd)
                fsync_directory(self.directory)
        except (OSError, StoreError) as exc:
            self._segments.pop(), self._firsts.pop()
            _unlink_if_same(copy.path, copy.fd)
            self._close(copy)
            raise exc if isinstance(exc, OSError) else OSError(str(exc)) from exc
        copy.live.update(event.seq for event in events)
        old, self._segments, self._firsts = self._segments[:-1], [copy], [copy.first_seq]
        for segment in old:
            _unlink_if_same(segment.path, segment.fd)
            self._close(segment)
        self._unwritten_settles = []  # the copy holds only unsettled events: no settle record is needed

    def _new_segment_or_oserror(self, first_seq: int) -> _Segment:
        try:
            return self._new_segment(first_seq)
        except StoreError as exc:
            raise OSError(str(exc)) from exc


class _OutOfSpace(StoreError):
    """A write failed for want of space; the segment rolled (see `write_events`)."""


def _unlinked(fd: int) -> bool:
    return os.fstat(fd).st_nlink == 0


def _unlink_if_same(path: str, fd: int) -> None:
    """Unlink the path if it still names the file open at `fd` (and not one made there since)."""
    try:
        at_path, held = os.stat(path), os.fstat(fd)
        if (at_path.st_ino, at_path.st_dev) == (held.st_ino, held.st_dev):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot unlink in-flight journal segment %s (its events are copied; an adopter may "
                    "deliver them twice, answered 409): %s", path, exc)
