"""Work on the SQLite pending store beyond the pipeline: retention, space, and the operator's tools.

Each function takes a connection inside a transaction; run them with `SqliteStore.run`.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Callable

from .base import DeadLetter

_SECONDS_PER_DAY = 86_400


def expire_pending(older_than_days: float) -> Callable[[sqlite3.Connection], int]:
    """Move pending rows received before the cut-off to dead-letter as expired; never delete them."""

    def run(connection: sqlite3.Connection) -> int:
        cutoff = time.time() - older_than_days * _SECONDS_PER_DAY
        reason = f"expired: still undelivered after {older_than_days:g} days"
        return dead_letter_pending(connection, "received_at < ?", (cutoff,), reason, with_last_error=True)

    return run


def dead_letter_pending(connection: sqlite3.Connection, where: str, params: tuple, reason: str,
                        with_last_error: bool = False) -> int:
    """Move the pending rows matching `where` to dead-letter with `reason`; returns how many moved."""
    reason_sql = "? || coalesce(' (last error: ' || last_error || ')', '')" if with_last_error else "?"
    connection.execute(
        "INSERT INTO dead_letter (log_id, index_name, document, received_at, attempts, reason, failed_at)"
        f" SELECT log_id, index_name, document, received_at, attempts, {reason_sql}, ? FROM pending WHERE {where}",
        (reason, time.time(), *params),
    )
    return connection.execute(f"DELETE FROM pending WHERE {where}", params).rowcount


def purge_dead_letters(older_than_days: float, reason: str | None = None) -> Callable[[sqlite3.Connection], int]:
    def run(connection: sqlite3.Connection) -> int:
        cutoff = time.time() - older_than_days * _SECONDS_PER_DAY
        where, params = _reason_filter(reason)
        return connection.execute(f"DELETE FROM dead_letter WHERE failed_at < ?{where}", (cutoff, *params)).rowcount

    return run


def list_dead_letters(reason: str | None, limit: int) -> Callable[[sqlite3.Connection], list[DeadLetter]]:
    def run(connection: sqlite3.Connection) -> list[DeadLetter]:
        where, params = _reason_filter(reason)
        rows = connection.execute(
            "SELECT id, log_id, index_name, document, attempts, reason, failed_at FROM dead_letter"
            f" WHERE 1 = 1{where} ORDER BY id LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [DeadLetter(*row) for row in rows]

    return run


def requeue_dead_letters(reason: str | None) -> Callable[[sqlite3.Connection], int]:
    """Move dead letters back to pending, due now with a fresh attempt count."""

    def run(connection: sqlite3.Connection) -> int:
        where, params = _reason_filter(reason)
        connection.execute(
            "INSERT INTO pending (log_id, index_name, document, received_at, attempts, next_attempt_at, last_error)"
            f" SELECT log_id, index_name, document, received_at, 0, 0, reason FROM dead_letter WHERE 1 = 1{where}",
            params,
        )
        return connection.execute(f"DELETE FROM dead_letter WHERE 1 = 1{where}", params).rowcount

    return run


def make_all_due(connection: sqlite3.Connection) -> int:
    """Every pending row becomes due now (leases are left alone: rows in flight stay with their owner)."""
    return connection.execute("UPDATE pending SET next_attempt_at = 0").rowcount


def forget_silent_owners(older_than_seconds: float) -> Callable[[sqlite3.Connection], int]:
    def run(connection: sqlite3.Connection) -> int:
        cutoff = time.time() - older_than_seconds
        return connection.execute("DELETE FROM owners WHERE heartbeat_at < ?", (cutoff,)).rowcount

    return run


def _reason_filter(reason: str | None) -> tuple[str, tuple]:
    if reason is None:
        return "", ()
    return " AND instr(lower(reason), lower(?)) > 0", (reason,)
