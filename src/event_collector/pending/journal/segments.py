"""The segments of one process's journal, oldest first: which segment holds an event, which events are
still live in each, rolling to a new file, and unlinking the oldest once nothing pins them."""

from __future__ import annotations

import bisect
import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from ...exceptions import StoreError
from .format import segment_name
from .place import names_open_file

log = logging.getLogger(__name__)

# Errors that say the disk (or the process's share of it) is full, rather than that it failed.
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class OutOfSpace(StoreError):
    """A write failed for want of space; a segment that held something rolled."""


@dataclass
class Segment:
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

    def append(self, data: bytes) -> None:
        """Write at the end; raises StoreError (OutOfSpace for a full disk) having cut off what it wrote."""
        try:
            written = os.pwrite(self.fd, data, self.size)
            while written < len(data):  # a short write: disk full, or a signal; what is left fails or goes on
                more = os.pwrite(self.fd, data[written:], self.size + written)
                if more == 0:
                    raise OSError(errno.ENOSPC, "No space left on device")
                written += more
        except OSError as exc:
            try:
                os.ftruncate(self.fd, self.size)
            except OSError:
                self.torn = self.rolled = True  # no record may follow a torn one
            message = f"in-flight journal {self.path} write failed: {exc}"
            if exc.errno in _OUT_OF_SPACE:
                if self.size:  # a segment that holds something rolls, to be unlinked once settled
                    self.rolled = True
                raise OutOfSpace(message) from exc
            raise StoreError(message) from exc
        self.size += len(data)

    def unlinked(self) -> bool:
        return os.fstat(self.fd).st_nlink == 0


class Segments:
    def __init__(self, directory: str, closed: Callable[[int], None]) -> None:
        self.directory = directory
        self._closed = closed  # told each descriptor this closes
        self._list: list[Segment] = []
        self._firsts: list[int] = []
        self._next_number = 1

    def __iter__(self) -> Iterator[Segment]:
        return iter(self._list)

    def __len__(self) -> int:
        return len(self._list)

    @property
    def active(self) -> Segment:
        return self._list[-1]

    @property
    def unsettled(self) -> int:
        return sum(len(segment.live) for segment in self._list)

    def pinned(self) -> int:
        """Settled segments that stay only because one before them holds an unsettled event."""
        return sum(1 for segment in self._list[:-1] if not segment.live)

    def live_seqs(self) -> set[int]:
        return {seq for segment in self._list for seq in segment.live}

    def new(self, first_seq: int) -> Segment:
        path = os.path.join(self.directory, segment_name(self._next_number))
        try:  # O_EXCL: a name is never reused, so no open segment is ever truncated or unlinked by mistake
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot make in-flight journal segment {path}: {exc}") from exc
        self._next_number += 1
        segment = Segment(self._next_number - 1, first_seq, path, fd)
        self._list.append(segment)
        self._firsts.append(first_seq)
        return segment

    def settle(self, seqs: Iterable[int]) -> None:
        for seq in seqs:
            position = bisect.bisect_right(self._firsts, seq) - 1
            if position >= 0:
                self._list[position].live.discard(seq)

    def drop_settled(self) -> int:
        """Unlink the oldest segments, but never the active one, while they hold no unsettled event; returns
        how many went. Only the oldest: a segment carries settle records for events in those before it, so
        it must outlive every segment whose events it settles. A segment that cannot be unlinked stays, with
        those after it, and is tried again at the next settle."""
        dropped = 0
        while len(self._list) > 1 and not self._list[0].live:
            segment = self._list[0]
            try:
                os.unlink(segment.path)
            except FileNotFoundError:
                pass  # removed by someone else: the journal's check makes it whole again
            except OSError as exc:
                log.warning("cannot unlink the settled in-flight journal segment %s: %s", segment.path, exc)
                break
            self._close(segment)
            del self._list[0], self._firsts[0]
            dropped += 1
        return dropped

    def oldest_first_seq(self) -> int:
        return self._firsts[0]

    def discard_newest(self) -> None:
        """Forget the newest segment, made by a rewrite that failed: emptied (whatever becomes of its name,
        it then holds no copy an adopter could take), unlinked and closed."""
        segment = self._list.pop()
        self._firsts.pop()
        try:
            os.ftruncate(segment.fd, 0)
        except OSError as exc:
            log.warning("cannot empty the unfinished in-flight journal segment %s: %s", segment.path, exc)
        unlink_if_same(segment.path, segment.fd)
        self._close(segment)

    def keep_only_newest(self) -> None:
        """The newest segment (a rewrite's copy) holds every unsettled event: unlink the others, oldest
        first. One that cannot be unlinked stays, and so does every one after it (they carry settle records
        for its events), emptied of live events and sorted before the copy; later settles try again."""
        *old, newest = self._list
        kept: list[Segment] = []
        for segment in old:
            if kept or not unlink_if_same(segment.path, segment.fd):
                segment.live, segment.first_seq = set(), 0
                kept.append(segment)
            else:
                self._close(segment)
        self._list = kept + [newest]
        self._firsts = [segment.first_seq for segment in self._list]

    def close_all(self) -> None:
        for segment in self._list:
            self._close(segment)
        self._list, self._firsts = [], []

    def _close(self, segment: Segment) -> None:
        self._closed(segment.fd)
        os.close(segment.fd)


def unlink_if_same(path: str, fd: int) -> bool:
    """Unlink the path if it still names the file open at `fd` (and not one made there since); whether the
    file has no name there now."""
    try:
        if names_open_file(path, fd):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot unlink in-flight journal segment %s (it is kept, and tried again): %s", path, exc)
        return False
    return True
