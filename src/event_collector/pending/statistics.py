"""The pending store's figures (`pending stats`, `pending replay`): its tables' and the events in flight.

Events in flight are in each process's journal, not in SQLite, so the figures read every journal's files
too: any one process, or the operator's tool on a read-only connection, counts all processes' events.
"""

from __future__ import annotations

import asyncio

from . import journal, rows
from .base import PendingStatistics
from .engine import Engine


async def read(engine: Engine) -> PendingStatistics:
    """The pending table's rows and every process's events in flight (read from the journals)."""
    stored = await engine.call(rows.statistics)
    flying = await asyncio.get_running_loop().run_in_executor(None, _in_flight, engine.path)
    return stored.with_in_flight(*flying)


async def oldest_unowned(engine: Engine) -> float | None:
    """When the oldest pending row nobody holds was received: one probe of the partial index
    `pending_unowned_received` (schema.py), cheap enough for a timer however many rows wait."""
    return await engine.call(
        lambda c: c.execute("SELECT min(received_at) FROM pending WHERE lease_owner IS NULL").fetchone()[0])


def _in_flight(store_path: str) -> tuple[int, int, float | None]:
    """How many events the journals beside the store hold unsettled, their documents' bytes and the oldest's
    time of receipt."""
    events = [event for directory in journal.journal_directories(store_path)
              for _, segment in journal.unsettled_events(directory) for event in segment]
    return (len(events), sum(len(e.document) for e in events), min((e.received_at for e in events), default=None))
