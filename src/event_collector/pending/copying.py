"""A store file deleted or replaced while in use: the rows of the old file carried into the one now at its path.

The engine notices the change before it next uses its connection (engine.py) and calls `move_into_new_file`;
`copy_rows` does the copying, a file's worth of rows in short transactions. Apart from the statements in
rows.py, this is the one writer of the tables.
"""

from __future__ import annotations

import logging
import sqlite3

from .. import metrics
from . import schema
from .liveness import Liveness
from .rows import CHUNK_ROWS, DEAD_LETTER_COLUMNS, IN_FLIGHT_COLUMNS, PENDING_COLUMNS

log = logging.getLogger(__name__)


def move_into_new_file(old: sqlite3.Connection, path: str, synchronous: str, liveness: Liveness) -> sqlite3.Connection:
    """The store's file was deleted or replaced while in use: what this process acknowledged would
    land in a file nobody reads. Open the file now at the path (made afresh, or already made by a
    sibling process) and copy every row the old one holds into it, ids kept, then use it."""
    log.error("pending store %s was deleted or replaced while in use: moving its rows into the file now "
              "at that path", path)
    new = schema.open_connection(path, synchronous=synchronous, recover_damaged=False)
    try:
        pending, dead = copy_rows(old, new)
    except BaseException:
        new.close()
        raise
    liveness.beat()  # its directory may have gone with the file
    metrics.store_replaced.inc()  # counted once the rows are safe in the new file, as its help says
    log.error("pending store %s made again: %d pending and %d dead-letter rows moved into it", path, pending, dead)
    return new


def copy_rows(source: sqlite3.Connection, target: sqlite3.Connection) -> tuple[int, int]:
    """Copy every pending, dead-letter and in-flight row from `source` into `target` with the same ids, so that the
    envelopes in memory still name their rows. A row already there with its id and log_id is skipped:
    several processes may each merge their view of one old file. A row whose id another event holds (a
    process wrote into the old file as it was deleted) comes in with a new id, unowned, to be replayed.
    Runs its own transactions on `target`, CHUNK_ROWS rows each. Returns the pending (in flight included)
    and dead-letter rows copied."""
    copied = []
    for table, columns in (("pending", PENDING_COLUMNS), ("dead_letter", DEAD_LETTER_COLUMNS),
                           ("in_flight", IN_FLIGHT_COLUMNS)):
        count, after = 0, 0
        values = ", ".join("?" * (columns.count(",") + 1))
        while rows := source.execute(f"SELECT id, {columns} FROM {table} WHERE id > ? ORDER BY id LIMIT ?",
                                     (after, CHUNK_ROWS)).fetchall():
            target.execute("BEGIN IMMEDIATE")
            try:
                count += target.executemany(f"INSERT OR IGNORE INTO {table} (id, {columns}) VALUES (?, {values})",
                                            rows).rowcount
                present = dict(target.execute(f"SELECT id, log_id FROM {table} WHERE id BETWEEN ? AND ?",
                                              (rows[0][0], rows[-1][0])))
                strangers = [row[1:] for row in rows if present[row[0]] != row[1]]
                if table == "pending":
                    strangers = [(*row[:6], None, row[7]) for row in strangers]
                if table == "in_flight":  # its envelope names another row now: replayed from pending instead
                    count += target.executemany(
                        f"INSERT INTO pending ({PENDING_COLUMNS}) VALUES (?, ?, ?, ?, 0, ?, NULL, NULL)",
                        [(*row[:4], row[3]) for row in strangers]).rowcount
                else:
                    count += target.executemany(f"INSERT INTO {table} ({columns}) VALUES ({values})",
                                                strangers).rowcount
                target.execute("COMMIT")
            except BaseException:
                if target.in_transaction:
                    target.execute("ROLLBACK")
                raise
            after = rows[-1][0]
        copied.append(count)
    return copied[0] + copied[2], copied[1]
