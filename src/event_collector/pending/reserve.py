"""Disk space kept beside the store, given up only so that a backlog can drain from a full disk.

Claiming a due row is a write (its lease), and so is deleting it once delivered; on a volume the backlog
filled, SQLite cannot even copy its write-ahead log back into the file (the log holds pages that grow it).
So the store keeps `<store file>-reserve`, a file of PENDING_RESERVE_BYTES allocated on the volume. When a
claim or the delete of delivered rows fails for want of space, that process deletes the file, copies the
log into the store file in the space freed, and runs the write again; the backlog drains in that space.
While the file is missing, new events that must be stored are refused (503): what the drain frees is the
drain's. It is made again once the volume has room for it twice over: made as soon as it fits, it would
only take back what the drain is still using, and be spent again.

The file is the whole state, shared by every process on the store: the first to need the space deletes
it, every process sees it missing, and whichever next finds room makes it again. Held before it is needed,
it is space nothing else on the volume (new events, logs, another program) can take meanwhile.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from typing import Callable

from ..exceptions import StoreFull

log = logging.getLogger(__name__)

_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
# While the reserve is missing, a process tries to make it again at most this often.
_RETRY_SECONDS = 1.0


class Reserve:
    def __init__(self, store_path: str, size_bytes: int) -> None:
        """`size_bytes` 0: no reserve is kept, and nothing is ever refused for want of one."""
        self.path = store_path + "-reserve"
        self.size_bytes = size_bytes
        # Cleared when the file cannot be made for a reason other than space (no fallocate on this file
        # system, a file size limit): the store then runs without a reserve, as it did before there was one.
        self.possible = size_bytes > 0

    @property
    def held(self) -> bool:
        """Whether the space is set aside: always, when no reserve is kept."""
        if not self.possible:
            return True
        try:
            return os.stat(self.path).st_size >= self.size_bytes
        except OSError:  # missing, or unreadable: `make` finds out which
            return False

    def make(self) -> bool:
        """Set the space aside, if the volume has room for it twice over; returns whether it is held."""
        if self.held:
            return True
        try:
            status = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
            if status.f_bavail * status.f_frsize < 2 * self.size_bytes:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                os.posix_fallocate(fd, 0, self.size_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            self._remove()  # a part of it would only take space
            if exc.errno in _NO_ROOM:
                return False
            self.possible = False
            log.error("cannot set %d bytes aside in %s for draining a full disk (%s): the store runs without "
                      "a reserve; a backlog that fills the disk then waits for space to be freed by hand",
                      self.size_bytes, self.path, exc)
            return True
        log.info("%d bytes set aside in %s for draining the pending store from a full disk", self.size_bytes,
                 self.path)
        return True

    def spend(self) -> bool:
        """Give the space back to the volume; returns whether this call did (not when it was spent already)."""
        return self.possible and self._remove()

    def _remove(self) -> bool:
        try:
            os.unlink(self.path)
        except OSError:  # spent already, or not ours to remove: either way this call freed nothing
            return False
        return True


class HeldReserve:
    """One process's view of the reserve: whether it is held, as of its last look. The store's `check_room`
    asks for every durable request, so the file is looked at by the files watch (`look`), by `check` when it
    makes it and by `spend`, not per request."""

    def __init__(self, reserve: Reserve, clock: Callable[[], float]) -> None:
        self._reserve = reserve
        self._clock = clock
        self._held = False
        self._tried_at = -math.inf

    def check(self) -> None:
        """Raise StoreFull while the reserve is not held and cannot be made (tried at most every
        _RETRY_SECONDS): what must be stored waits until the drain no longer needs the space."""
        if self._held:
            return
        now = self._clock()
        if now - self._tried_at >= _RETRY_SECONDS:
            self._tried_at = now
            self._held = self._reserve.make()
        if not self._held:
            raise StoreFull(f"the pending store's volume has no room for the {self._reserve.size_bytes} bytes it "
                            f"keeps for draining from a full disk (PENDING_RESERVE_BYTES, {self._reserve.path}): "
                            "new events are refused until it has room for them twice over")

    def look(self) -> None:
        """Notice a reserve another process spent."""
        if self._held:
            self._held = self._reserve.held

    def spend(self, cause: Exception) -> None:
        """Give the space back to the volume for a write that failed for want of it (`cause`); the process
        whose call freed it says so."""
        self._held = False
        if self._reserve.spend():
            log.error("the pending store's volume is full (%s): gave the %d bytes set aside in %s back to it for "
                      "the backlog to drain; new events that must be stored are refused until it has room for "
                      "them twice over", cause, self._reserve.size_bytes, self._reserve.path)
