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


def find(connection: sqlite3.Connection, log_ids: list[str]) -> StoredReceipts:
    """The pending rows and dead letters of `log_ids`. Read in one snapshot: a row that moves from pending to
    dead-letter meanwhile is seen in exactly one of them."""
    wanted = json.dumps(log_ids)
    connection.execute("BEGIN")
    try:
        pending_rows = connection.execute(
            "SELECT log_id, document, attempts, next_attempt_at, last_error FROM pending"
            " WHERE log_id IN (SELECT value FROM json_each(?)) ORDER BY id", (wanted,)).fetchall()
        dead_rows = connection.execute(
            "SELECT log_id, document, reason, failed_at FROM dead_letter"
            " WHERE log_id IN (SELECT value FROM json_each(?)) ORDER BY id", (wanted,)).fetchall()
    finally:
        connection.execute("COMMIT")
    # Ordered by id: a later row of the same log_id overwrites an earlier one.
    pending = {log_id: PendingReceipt(document_owner(document), attempts, next_attempt_at, last_error)
               for log_id, document, attempts, next_attempt_at, last_error in pending_rows}
    dead_letters = {log_id: DeadLetterReceipt(document_owner(document), reason, failed_at)
                    for log_id, document, reason, failed_at in dead_rows}
    return StoredReceipts(pending, dead_letters)
