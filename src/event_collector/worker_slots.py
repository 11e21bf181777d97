"""Which of the SERVER_WORKERS processes this one is: a slot from 0 to SERVER_WORKERS - 1.

uvicorn starts its worker processes alike, without a number. Each claims the first free slot by taking an
exclusive lock on a file of that slot in a directory private to this `serve`; the lock lives as long as
the process, so a worker that dies frees its slot and the worker started in its place takes it over. The
slot decides the worker's share of QUEUE_CAPACITY and BULK_WORKERS, and slot 0 runs the store's janitor,
so that one process, not every worker, does the maintenance.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_held: list[IO] = []  # the locked files, open for the life of the process


def claim_slot(directory: str | Path, slots: int) -> int:
    for slot in range(slots):
        lock_file = open(Path(directory) / f"worker-slot-{slot}.lock", "w")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            continue
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        _held.append(lock_file)
        return slot
    # Only when more processes than SERVER_WORKERS run (a supervisor's overlap): share as the last one.
    log.warning("all %d worker slots are taken; this process shares the last one", slots)
    return slots - 1
