"""Which processes using a store are alive: each touches a heartbeat file of its own, from a thread of its own.

The files live in `<store path>-owners/`, one per owner, the modification time being the last beat. A beat
is one `utime`, with no lock and no database, so neither a busy store, a long transaction nor a blocked
event loop can delay it: a live process is never taken for dead. An owner is dead once its file is missing
or older than PENDING_OWNER_TIMEOUT_SECONDS; its leased rows may then be adopted by a live process.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

# Owner ids are uuid4 hex; anything else found in a lease names no file, so its owner counts as dead.
_OWNER_ID = re.compile(r"[0-9a-f]{32}")
# Made with the directory: its time says since when missing files mean anything (see `is_alive`).
_SINCE = ".since"


class Liveness:
    def __init__(self, store_path: str, owner: str, timeout_seconds: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(store_path + "-owners")
        self.owner = owner
        self.timeout_seconds = timeout_seconds
        self._clock = clock
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Beat now, then every third of the timeout until `stop`."""
        self.beat()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"heartbeat-{self.owner[:8]}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and date this owner's file back to 1970: its leases end now, not after the timeout.
        (A missing file would not do: see `is_alive`. The janitor removes the file a day later.)"""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            os.utime(self.directory / self.owner, (0, 0))
        except FileNotFoundError:
            pass

    def _beat_until_stopped(self) -> None:
        while not self._stopping.wait(self.timeout_seconds / 3):
            try:
                self.beat()
            except OSError as exc:  # the thread must outlive any one failure, or this process's leases lapse
                log.error("heartbeat of pending store owner %s failed: %s", self.owner, exc)

    def beat(self) -> None:
        now = self._clock()  # taken when it beats, never before a wait
        path = self.directory / self.owner
        try:
            os.utime(path, (now, now))
        except FileNotFoundError:  # the first beat, or the directory was deleted: make it again
            self._make_directory(now)
            path.touch()
            os.utime(path, (now, now))

    def _make_directory(self, now: float) -> None:
        self.directory.mkdir(exist_ok=True)
        try:
            with open(self.directory / _SINCE, "x"):
                pass
        except FileExistsError:
            return
        os.utime(self.directory / _SINCE, (now, now))

    def is_alive(self, owner: str) -> bool:
        if owner == self.owner:
            return True
        if not _OWNER_ID.fullmatch(owner):
            return False
        now = self._clock()
        try:
            return now - os.stat(self.directory / owner).st_mtime < self.timeout_seconds
        except FileNotFoundError:
            # Dead, unless the directory was made less than a timeout ago (first use after an upgrade, or
            # deleted by hand): its live owners may not have beaten into it yet.
            try:
                return now - os.stat(self.directory / _SINCE).st_mtime < self.timeout_seconds
            except FileNotFoundError:
                return True

    def forget_silent(self, older_than_seconds: float) -> int:
        """Remove the files of owners silent for that long (processes killed without a stop)."""
        cutoff = self._clock() - older_than_seconds
        forgotten = 0
        for path in self.directory.glob("*"):
            try:
                if _OWNER_ID.fullmatch(path.name) and path.stat().st_mtime < cutoff:
                    path.unlink()
                    forgotten += 1
            except FileNotFoundError:
                continue
        return forgotten
