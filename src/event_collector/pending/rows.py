"""The SQL for rows: every statement that reads or writes pending and dead-letter rows.

Each function takes a connection inside one of the engine's transactions, unless it says otherwise. A
pending row comes in by `insert_pending` (or `adopt_in_flight`); a dead letter as a pending row moved by
`move_to_dead_letter` (an event that never had a row gets one first). Only `copying.copy_rows`, which carries
a whole file over, writes the tables otherwise.

Durable mode's events in flight are not here but in each process's journal (journal.py); an envelope
names its journal record by the negative of its sequence number, so `pending_id is not None` still means
"is kept somewhere". The `in_flight` table (schema 3) held them before the journal; a file written by that
version may still have rows there, which `adopt_in_flight` moves to `pending` once their owner is dead.
Work over many rows (retention, adoption, requeue) is done `CHUNK_ROWS` at a time, one transaction each,
so that no process holds the write lock for long.
"""

from __future__ import annotations

import logging
import sqlite3
import msgspec

from .. import metrics
from ..envelope import Envelope
from .base import DeadLetter, Failure, PendingStatistics

log = logging.getLogger(__name__)

# Rows per transaction in bulk maintenance: 0.1 to 0.3 s of write lock each on a busy 2-core machine.
CHUNK_ROWS = 5_000

PENDING_COLUMNS = "log_id, index_name, document, received_at, attempts, next_attempt_at, lease_owner, last_error"
DEAD_LETTER_COLUMNS = "log_id, index_name, document, received_at, attempts, reason, failed_at"
IN_FLIGHT_COLUMNS = "log_id, index_name, document, received_at, owner"


def is_in_flight(pending_id: int | None) -> bool:
    """Whether an envelope is in its process's journal (a negative id) rather than a `pending` row."""
    return pending_id is not None and pending_id < 0


def pending_row(envelope: Envelope, next_attempt_at: float, owner: str | None, last_error: str | None) -> tuple:
    """A new pending row, in the column order of `insert_pending`."""
    return (envelope.log_id, envelope.index, envelope.document, envelope.received_at, envelope.attempts,
            next_attempt_at, owner, last_error)


def insert_pending(connection: sqlite3.Connection, rows: list[tuple]) -> range:
    """Insert pending rows; returns their ids, in order."""
    # Under BEGIN IMMEDIATE nobody else writes, and AUTOINCREMENT hands out ids in order, so the rows of
    # one executemany get consecutive ids after the sequence's previous value.
    (last,) = connection.execute("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'pending'").fetchone()
    connection.executemany(f"INSERT INTO pending ({PENDING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    return range(last + 1, last + 1 + len(rows))


def insert_pending_together(connection: sqlite3.Connection, row_lists: list[list[tuple]]) -> list[range]:
    """The inserts of one group commit as one `insert_pending`; each gets the range of its own ids."""
    ids = insert_pending(connection, [row for rows in row_lists for row in rows])
    ranges, start = [], ids.start
    for rows in row_lists:
        ranges.append(range(start, start + len(rows)))
        start += len(rows)
    return ranges


def in_flight_owners(connection: sqlite3.Connection) -> list[str]:
    """Every owner holding in-flight rows: a scan, as the table has no index; adoption alone asks, now and
    then, and the table holds only what the processes have in memory."""
    return [owner for (owner,) in connection.execute("SELECT DISTINCT owner FROM in_flight")]


def adopt_in_flight(connection: sqlite3.Connection, owner: str) -> int:
    """Move up to CHUNK_ROWS in-flight rows of `owner` (a dead process) to `pending`, unowned and due (as of
    when they were received), for a replay; returns how many. Those it had delivered but not yet deleted
    are delivered again and answered 409."""
    moved = connection.execute(
        f"INSERT INTO pending ({PENDING_COLUMNS}) SELECT log_id, index_name, document, received_at, 0, received_at,"
        " NULL, NULL FROM in_flight WHERE owner = ? ORDER BY id LIMIT ?", (owner, CHUNK_ROWS)).rowcount
    connection.execute("DELETE FROM in_flight WHERE id IN (SELECT id FROM in_flight WHERE owner = ? ORDER BY id"
                       " LIMIT ?)", (owner, CHUNK_ROWS))
    return moved


def move_to_dead_letter(connection: sqlite3.Connection, now: float) -> int:
    """Move the pending rows listed in the connection's `doomed` table to dead-letter, each with its reason
    and attempt count, and empty the list; returns how many moved. One statement each way, however many."""
    connection.execute(
        f"INSERT INTO dead_letter ({DEAD_LETTER_COLUMNS}) SELECT p.log_id, p.index_name, p.document,"
        " p.received_at, d.attempts, d.reason, ? FROM doomed d JOIN pending p ON p.id = d.id ORDER BY d.id", (now,))
    moved = connection.execute("DELETE FROM pending WHERE id IN (SELECT id FROM doomed)").rowcount
    connection.execute("DELETE FROM doomed")
    return moved


def dead_letter_failures(connection: sqlite3.Connection, failures: list[Failure], owner: str, now: float) -> None:
    """Dead-letter failed envelopes, but of those stored only the rows `owner` still holds: a row adopted
    by another process (this one was taken for dead) is that process's to settle."""
    unstored = [f for f in failures if not _has_row(f.envelope)]
    if unstored:  # an event without a row (in memory, or in flight in the journal) gets one, moved like the others
        new_ids = iter(insert_pending(connection, [pending_row(f.envelope, now, owner, None) for f in unstored]))
    row_ids = [f.envelope.pending_id if _has_row(f.envelope) else next(new_ids) for f in failures]
    connection.executemany(
        "INSERT INTO doomed (id, reason, attempts) SELECT id, ?, ? FROM pending"
        " WHERE id = ? AND log_id = ? AND lease_owner = ?",
        [(f.reason, f.envelope.attempts, row_id, f.envelope.log_id, owner) for f, row_id in zip(failures, row_ids)])
    move_to_dead_letter(connection, now)


def _has_row(envelope: Envelope) -> bool:
    return envelope.pending_id is not None and not is_in_flight(envelope.pending_id)


# Rows are named by (id, log_id) wherever the id comes from memory: after the file was replaced by
# another one (see copying.py), an id alone might name another event's row.


def delete_pending(connection: sqlite3.Connection, keys: list[tuple[int, str]]) -> None:
    """Delete rows by (id, log_id), whoever holds them: a delivered event is in OpenSearch, and a copy in
    flight elsewhere will be answered 409."""
    connection.executemany("DELETE FROM pending WHERE id = ? AND log_id = ?", keys)


def keep_for_retry(connection: sqlite3.Connection, updates: list[tuple], owner: str) -> None:
    """Set (attempts, next_attempt_at, last_error) of rows `owner` holds, given by (id, log_id), and end
    the lease; a row another process holds now is left to it."""
    connection.executemany(
        "UPDATE pending SET attempts = ?, next_attempt_at = ?, lease_owner = NULL, last_error = ?"
        " WHERE id = ? AND log_id = ? AND lease_owner = ?", [(*update, owner) for update in updates])


def release(connection: sqlite3.Connection, keys: list[tuple[int, str]], owner: str) -> None:
    connection.executemany("UPDATE pending SET lease_owner = NULL WHERE id = ? AND log_id = ? AND lease_owner = ?",
                           [(*key, owner) for key in keys])


def claim(connection: sqlite3.Connection, owner: str, now: float, limit: int) -> list[Envelope]:
    """Lease to `owner` up to `limit` due rows that nobody holds, and return them as envelopes; rows
    that cannot be read go to dead-letter. Walks only unowned rows (the partial index `pending_claimable`)."""
    rows = connection.execute(
        "UPDATE pending SET lease_owner = ? WHERE id IN (SELECT id FROM pending WHERE lease_owner IS NULL"
        " AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?)"
        " RETURNING id, log_id, index_name, document, received_at, attempts",
        (owner, now, limit),
    ).fetchall()
    rows.sort()
    envelopes, unreadable = [], []
    for row in rows:
        envelope = _envelope_from_row(row)
        if envelope is None:
            unreadable.append(row)
        else:
            envelopes.append(envelope)
    if unreadable:
        log.error("%d pending rows cannot be read (first id %s); moved to dead-letter", len(unreadable),
                  unreadable[0][0])
        connection.executemany("INSERT INTO doomed (id, reason, attempts) SELECT id, 'unreadable pending row',"
                               " attempts FROM pending WHERE id = ?", [(row[0],) for row in unreadable])
        move_to_dead_letter(connection, now)
        metrics.dead_letters.labels("unreadable").inc(len(unreadable))
    return envelopes


def lease_owners(connection: sqlite3.Connection) -> list[str]:
    """Every owner holding rows, found with one index probe each (`pending_owner`), not a scan."""
    owners: list[str] = []
    while (owner := connection.execute("SELECT min(lease_owner) FROM pending WHERE lease_owner > ?",
                                       (owners[-1] if owners else "",)).fetchone()[0]) is not None:
        owners.append(owner)
    return owners


def free_rows_of(connection: sqlite3.Connection, owner: str) -> int:
    """End the leases of up to CHUNK_ROWS rows held by `owner`; returns how many. They are due already:
    an owned row was either written due (durable mode) or claimed because it was due."""
    return connection.execute(
        "UPDATE pending SET lease_owner = NULL WHERE id IN (SELECT id FROM pending WHERE lease_owner = ? LIMIT ?)",
        (owner, CHUNK_ROWS)).rowcount


def expire(connection: sqlite3.Connection, cutoff: float, reason: str, now: float) -> int:
    """Move up to CHUNK_ROWS unowned pending rows received before `cutoff` to dead-letter; returns how many.
    Rows in flight are left to their live owner: if they fail, they expire at a later round."""
    connection.execute(
        "INSERT INTO doomed (id, reason, attempts) SELECT id, ? || coalesce(' (last error: ' || last_error || ')',"
        " ''), attempts FROM pending WHERE lease_owner IS NULL AND received_at < ? ORDER BY received_at LIMIT ?",
        (reason, cutoff, CHUNK_ROWS))
    return move_to_dead_letter(connection, now)


def make_due(connection: sqlite3.Connection) -> int:
    """Make up to CHUNK_ROWS unowned rows that wait out a backoff due now; returns how many."""
    return connection.execute(
        "UPDATE pending SET next_attempt_at = 0 WHERE id IN (SELECT id FROM pending WHERE lease_owner IS NULL"
        " AND next_attempt_at > 0 LIMIT ?)", (CHUNK_ROWS,)).rowcount


def purge_dead_letters(connection: sqlite3.Connection, cutoff: float, reason: str | None) -> int:
    where, params = _reason_filter(reason)
    return connection.execute(
        f"DELETE FROM dead_letter WHERE id IN (SELECT id FROM dead_letter WHERE failed_at < ?{where} LIMIT ?)",
        (cutoff, *params, CHUNK_ROWS)).rowcount


def trim_dead_letters(connection: sqlite3.Connection, max_bytes: int) -> int:
    """Delete the oldest dead letters, up to CHUNK_ROWS, until their documents fit in `max_bytes`."""
    excess = byte_counts(connection)[1] - max_bytes
    if excess <= 0:
        return 0
    dropped, freed, last_id = 0, 0, None
    for row_id, size in connection.execute(
            "SELECT id, coalesce(length(document), 0) FROM dead_letter ORDER BY id LIMIT ?", (CHUNK_ROWS,)):
        dropped, freed, last_id = dropped + 1, freed + size, row_id
        if freed >= excess:
            break
    if last_id is not None:
        connection.execute("DELETE FROM dead_letter WHERE id <= ?", (last_id,))
    return dropped


def requeue_dead_letters(connection: sqlite3.Connection, reason: str | None) -> int:
    """Move up to CHUNK_ROWS dead letters back to pending, due now with a fresh attempt count."""
    where, params = _reason_filter(reason)
    letters = connection.execute(
        f"SELECT id, log_id, index_name, document, received_at, reason FROM dead_letter WHERE 1 = 1{where}"
        " ORDER BY id LIMIT ?", (*params, CHUNK_ROWS)).fetchall()
    insert_pending(connection, [(log_id, index, document, received_at, 0, 0, None, why)
                                for _, log_id, index, document, received_at, why in letters])
    connection.executemany("DELETE FROM dead_letter WHERE id = ?", [(letter[0],) for letter in letters])
    return len(letters)


def list_dead_letters(connection: sqlite3.Connection, reason: str | None, limit: int) -> list[DeadLetter]:
    where, params = _reason_filter(reason)
    rows = connection.execute(
        f"SELECT id, log_id, index_name, document, attempts, reason, failed_at FROM dead_letter WHERE 1 = 1{where}"
        " ORDER BY id LIMIT ?", (*params, limit)).fetchall()
    return [DeadLetter(*row) for row in rows]


def byte_counts(connection: sqlite3.Connection) -> tuple[int, int]:
    """The documents' bytes in pending and in dead-letter, as the triggers keep them (no scan); in-flight
    rows have no trigger and are not counted here (see SqliteStore.backlog_bytes)."""
    counters = dict(connection.execute("SELECT name, value FROM counters"))
    return counters["pending_bytes"], counters["dead_letter_bytes"]


def statistics(connection: sqlite3.Connection) -> PendingStatistics:
    """Pending and in-flight rows together: both are events not yet confirmed delivered."""
    rows, oldest = connection.execute("SELECT count(*), min(received_at) FROM pending").fetchone()
    histogram = dict(connection.execute("SELECT attempts, count(*) FROM pending GROUP BY attempts"))
    flying, flying_oldest, flying_bytes = connection.execute(
        "SELECT count(*), min(received_at), coalesce(sum(length(document)), 0) FROM in_flight").fetchone()
    if flying:  # never tried yet
        histogram[0] = histogram.get(0, 0) + flying
    oldest = min((t for t in (oldest, flying_oldest) if t is not None), default=None)
    (dead,) = connection.execute("SELECT count(*) FROM dead_letter").fetchone()
    pending_bytes, dead_bytes = byte_counts(connection)
    return PendingStatistics(rows + flying, pending_bytes + flying_bytes, oldest, histogram, dead, dead_bytes)


def _reason_filter(reason: str | None) -> tuple[str, tuple]:
    if reason is None:
        return "", ()
    return " AND instr(lower(reason), lower(?)) > 0", (reason,)


def _envelope_from_row(row: tuple) -> Envelope | None:
    """The envelope a pending row holds, or None when the row is damaged (wrong types, invalid JSON)."""
    row_id, log_id, index, document, received_at, attempts = row
    if isinstance(document, str):
        document = document.encode()
    if not (isinstance(log_id, str) and isinstance(index, str) and isinstance(document, bytes)
            and isinstance(received_at, (int, float)) and isinstance(attempts, int)):
        return None
    try:
        msgspec.json.decode(document)
    except msgspec.DecodeError:
        return None
    return Envelope(index, log_id, document, float(received_at), row_id, attempts)
