"""The files watch: each process's timer that makes its journal and the store's file whole if someone
removed them while in use, whether or not events arrive (an idle process writes nothing, nor does one whose
buffer is full and that writes only to SQLite, nor one whose delivery is paused and that replays nothing).
docs/delivery.md, "Store layout", says what each removal costs.
"""

from __future__ import annotations

import asyncio
import logging

from .engine import Engine
from .journal import Journal
from .reserve import HeldReserve

log = logging.getLogger(__name__)

# How often the journal and the store's file are checked for removal.
FILES_CHECK_SECONDS = 0.5


async def watch_files(engine: Engine, journal: Journal, reserve: HeldReserve) -> None:
    """Until cancelled: notice a reserve another process spent, rescue a removed journal (journal.check),
    move the rows of a removed or replaced store file into the file now at its path (copying.py), and, once
    the write-ahead log is lost, have every commit copied into the store's file."""
    said = ""
    log_lost_said = False
    while True:
        await asyncio.sleep(FILES_CHECK_SECONDS)
        try:
            reserve.look()
            journal.check()
            if engine.file_changed():  # using the connection moves its rows into the file at the path
                await engine.call(lambda connection: None)
            elif engine.log_lost() and not log_lost_said:
                log_lost_said = True
                log.error("pending store %s: its write-ahead log was deleted or replaced while in use; every "
                          "commit is copied into the store's file at once from now on. Restart every process "
                          "using the store, together, to start a new log", engine.path)
                await engine.copy_every_commit()
        except Exception as exc:  # the watch must outlive any one failure, or removals go unnoticed
            if str(exc) != said:  # said once, not every half second
                log.error("checking the pending store's files failed: %s", exc)
            said = str(exc)
