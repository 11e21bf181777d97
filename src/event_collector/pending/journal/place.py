"""Where journals live on disk, and how they are adopted.

`<store path>-in-flight/<owner>/` holds one process's journal: a `lock` file, on which the process holds an
exclusive `flock` for as long as it runs, and its segments. A `Place` is a live process's own directory:
made, checked and, when someone removed part of it, made again. `orphans` finds the journals whose process
is gone (the kernel dropped their lock) for adoption; `unsettled_events` reads one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from typing import Iterator

from .format import SUFFIX, JournalEvent, read_segment

LOCK = "lock"
# A hidden directory (a journal being made) older than this was left by a process that died making it.
_ABANDONED_AFTER_SECONDS = 60.0


def directory_of(store_path: str) -> str:
    return store_path + "-in-flight"


class Place:
    """One process's journal directory and its lock."""

    def __init__(self, root: str, owner: str, *, sync: bool) -> None:
        self.root = root
        self.owner = owner
        self.directory = os.path.join(root, owner)
        self.sync = sync
        self.lock_fd: int | None = None

    def make(self) -> None:
        """Make the directory and take its lock. It is made under a hidden name and renamed into place with
        the lock held, so that no adopter ever sees it unlocked."""
        os.makedirs(self.root, exist_ok=True)
        making = os.path.join(self.root, f".{self.owner}.new")
        os.makedirs(making, exist_ok=True)
        self._hold(self._locked_then_renamed(os.path.join(making, LOCK), making, self.directory, self.root))

    def lost(self) -> list[str]:
        """What of this directory is gone from the file system: the directory, the lock file (deleted, or
        replaced by a file this process does not hold)."""
        if not os.path.isdir(self.directory):
            return ["the directory"]
        return [] if names_open_file(os.path.join(self.directory, LOCK), self.lock_fd) else ["the lock file"]

    def restore(self) -> None:
        """Make again what `lost` reports, the lock held throughout: a new lock file is locked before it
        takes the name, so no adopter ever finds this live journal unlocked."""
        if not os.path.isdir(self.directory):
            self.make()
            return
        making = os.path.join(self.directory, f".{LOCK}.new")
        self._hold(self._locked_then_renamed(making, making, os.path.join(self.directory, LOCK), self.directory))

    def release(self, remove: bool) -> None:
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    def _locked_then_renamed(self, lock: str, source: str, target: str, parent: str) -> int:
        """Lock the file `lock`, then rename `source` (the file or the directory holding it) to `target`;
        returns the locked descriptor."""
        lock_fd = _locked_file(lock)
        try:
            os.rename(source, target)
            if self.sync:
                fsync_directory(parent)
        except OSError:
            os.close(lock_fd)
            raise
        return lock_fd

    def _hold(self, lock_fd: int) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
        self.lock_fd = lock_fd


def _locked_file(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise
    return fd


def fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- reading and adopting other processes' journals ----------------------------------------------


def segment_paths(directory: str) -> list[str]:
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    return [os.path.join(directory, name) for name in names]


def unsettled_events(directory: str) -> Iterator[tuple[str, list[JournalEvent]]]:
    """Each segment of a journal directory, in order, with its events that no segment says are settled.
    An event found twice (a rescue that could not unlink the segment it copied from) is given once."""
    read = [(path, *_read_or_nothing(path)) for path in segment_paths(directory)]
    seen = set().union(*(done for _, _, done in read)) if read else set()
    for path, events, _ in read:
        fresh = [event for event in events if event.seq not in seen]
        seen.update(event.seq for event in fresh)
        yield path, fresh


def _read_or_nothing(path: str) -> tuple[list[JournalEvent], set[int]]:
    try:
        return read_segment(path)
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
    that died making it, and holds no event; it is removed. A directory without a lock file is skipped: its
    process is making its lock again (`Place.restore`)."""
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
            lock_fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            continue  # being made or being removed
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            continue  # alive
        if not names_open_file(os.path.join(directory, LOCK), lock_fd):
            os.close(lock_fd)
            continue  # the live owner made its lock again meanwhile (Place.restore): this one was the old
        orphan = Orphan(directory, lock_fd)
        if name.startswith("."):
            orphan.remove()
            orphan.release()
            continue
        yield orphan


def names_open_file(path: str, fd: int) -> bool:
    """Whether `path` names the file open at `fd`."""
    try:
        at_path, held = os.stat(path), os.fstat(fd)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return (at_path.st_ino, at_path.st_dev) == (held.st_ino, held.st_dev)


def _older_than(path: str, seconds: float) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime > seconds
    except FileNotFoundError:
        return False
