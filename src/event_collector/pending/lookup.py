"""What the store knows of events named by log_id, for receipts (POST /v1/receipts): their pending rows and
their dead letters, read in one read transaction (one query per table, through the `*_log_id` indices of
schema 4) on the store's thread. Each row comes with its document's owner fields, for the caller's check.

A log_id may have several rows (an event sent twice before its first copy was delivered): the newest one
answers, as it says most recently what became of the event.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from ..envelope import DocumentOwner, document_owner


@dataclass(frozen=True)
class PendingReceipt:
    owner: DocumentOwner
    attempts: int
    next_attempt_at: float
    last_error: str | None


@dataclass(frozen=True)
class DeadLetterReceipt:
    owner: DocumentOwner
    reason: str
    failed_at: float


@dataclass(frozen=True)
class StoredReceipts:
    pending: dict[str, PendingReceipt]
    dead_letters: dict[str, DeadLetterReceipt]


# Through the log_id indices, in no particular order: an ORDER BY would sort the rows, documents and all, in a
# temporary tree.
PENDING_QUERY = ("SELECT id, log_id, document, attempts, next_attempt_at, last_error FROM pending"
                 " WHERE log_id IN (SELECT value FROM json_each(?))")
DEAD_LETTER_QUERY = ("SELECT id, log_id, document, reason, failed_at FROM dead_letter"
                     " WHERE log_id IN (SELECT value FROM json_each(?))")


def find(connection: sqlite3.Connection, log_ids: list[str]) -> StoredReceipts:
    """The pending rows and dead letters of `log_ids`. Read in one snapshot: a row that moves from pending to
    dead-letter meanwhile is seen in exactly one of them."""
    wanted = (json.dumps(log_ids),)
    pending: dict[str, tuple[int, PendingReceipt]] = {}
    dead_letters: dict[str, tuple[int, DeadLetterReceipt]] = {}
    connection.execute("BEGIN")
    try:
        # Row by row, so that only one document is held at a time (a document may be up to MAX_BODY_BYTES).
        for row_id, log_id, document, attempts, next_at, last_error in connection.execute(PENDING_QUERY, wanted):
            if log_id not in pending or pending[log_id][0] < row_id:
                pending[log_id] = row_id, PendingReceipt(document_owner(document), attempts, next_at, last_error)
        for row_id, log_id, document, reason, failed_at in connection.execute(DEAD_LETTER_QUERY, wanted):
            if log_id not in dead_letters or dead_letters[log_id][0] < row_id:
                dead_letters[log_id] = row_id, DeadLetterReceipt(document_owner(document), reason, failed_at)
    finally:
        connection.execute("COMMIT")
    return StoredReceipts({log_id: receipt for log_id, (_, receipt) in pending.items()},
                          {log_id: receipt for log_id, (_, receipt) in dead_letters.items()})
