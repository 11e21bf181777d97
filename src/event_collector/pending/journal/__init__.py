"""Durable mode's events in flight: an append-only journal per process, next to the SQLite store.

Every event durable mode accepts is written before the answer and forgotten once it is delivered, moved
to the pending table, or dead-lettered: nearly all of them are settled within seconds. A SQLite commit
writes whole pages (about 4 KB per commit, and at 350 events/s a commit carries about one event);
appending the event's record to a file costs about the record (bench/RESULTS.md, "Bytes written per
event"). The pending table keeps what waits; the journal only what this process holds in memory.

One `pwrite` per accepted request at the active segment's end. With SQLITE_SYNCHRONOUS=NORMAL that is all
(the page cache outlives `kill -9`, as SQLite's WAL does with NORMAL); with FULL an `fdatasync` follows
before the answer, one on a thread for every request that wrote meanwhile (`sync.py`).

Its parts: `format` (records, checksums, reading a segment), `place` (the directory and its lock, and
the adoption of dead processes' journals), `sync` (group fdatasync) and `writer` (one process's journal:
sequence numbers, live sets, rolling, unlinking, and the rescue of files removed while in use).
docs/delivery.md, "Store layout", says what each fault on disk costs.

It may import what the rest of pending may (the foundations: exceptions, envelope and the like) and none of
pending's other modules: the SQLite store uses the journal, never the other way round.
"""

from .format import JournalEvent
from .place import Orphan, directory_of, journal_directories, orphans, unsettled_events
from .writer import SEGMENT_BYTES, Journal

__all__ = ["SEGMENT_BYTES", "Journal", "JournalEvent", "Orphan", "directory_of", "journal_directories", "orphans",
           "unsettled_events"]
