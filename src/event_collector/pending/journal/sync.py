"""Group fdatasync for SQLITE_SYNCHRONOUS=FULL: a request that wrote waits until its bytes are on disk, and
one fdatasync on a thread serves every request that wrote while the previous round ran."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from ...exceptions import StoreError
from .place import fsync_directory

log = logging.getLogger(__name__)


class GroupSync:
    def __init__(self, directory: str, failed: Callable[[], None]) -> None:
        """`failed()` is called when an fdatasync fails: the journal then writes nothing more to those files."""
        self.directory = directory
        self._failed = failed
        self._executor: ThreadPoolExecutor | None = None
        # Futures waiting for the next round; files written since the last round, by their descriptor.
        self._waiting: list[asyncio.Future] = []
        self._written: set[int] = set()
        # A file was made since the last round: its name reaches the disk with the directory's fsync.
        self._new_file = False
        self._running = False
        # Rounds run: the measure of how well syncs are grouped.
        self.rounds = 0

    def wrote(self, fd: int) -> None:
        self._written.add(fd)

    def made_file(self) -> None:
        self._new_file = True

    def forget(self, fd: int) -> None:
        """The file is closed: nothing in it needs syncing any more (its events are settled or copied)."""
        self._written.discard(fd)

    def wait(self) -> asyncio.Future:
        """A future done once everything written so far is on disk."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        if not self._running:
            self._start_round()
        return future

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _start_round(self) -> None:
        waiting, self._waiting = self._waiting, []
        written, self._written = self._written, set()
        new_file, self._new_file = self._new_file, False
        fds: list[int] = []
        try:
            # Copies of the descriptors: a segment may be settled and closed while the thread syncs it.
            for fd in written:
                fds.append(os.dup(fd))
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="in-flight-journal")
            round_ = self._executor.submit(_sync_all, fds, self.directory if new_file else None)
        except (OSError, RuntimeError) as exc:  # EMFILE, or no thread to be had: these requests are refused
            for fd in fds:
                os.close(fd)
            self._written |= written
            self._new_file |= new_file
            self._finish(waiting, exc)
            return
        self._running = True
        self.rounds += 1
        loop = asyncio.get_running_loop()
        round_.add_done_callback(lambda done: loop.call_soon_threadsafe(self._round_done, done, waiting))

    def _round_done(self, done, waiting: list[asyncio.Future]) -> None:
        self._running = False
        error = done.exception()
        if error is not None:
            # Linux reports a failed writeback once: a later fdatasync of the same file may succeed though
            # pages written meanwhile were dropped. So those who wait for the next round are refused too,
            # and the journal writes what comes next to a new file.
            waiting, self._waiting = waiting + self._waiting, []
            self._written.clear()
            self._failed()
        self._finish(waiting, error)
        if self._waiting:
            self._start_round()

    def _finish(self, waiting: list[asyncio.Future], error: BaseException | None) -> None:
        for future in waiting:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(StoreError(f"in-flight journal {self.directory} fdatasync failed: {error}"))


def _sync_all(fds: list[int], directory: str | None) -> None:
    try:
        for fd in fds:
            os.fdatasync(fd)
        if directory is not None:
            fsync_directory(directory)
    finally:
        for fd in fds:
            os.close(fd)
