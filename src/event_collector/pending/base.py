"""What every pending store offers: the pipeline, the janitor and the operator's tools use nothing else.

The SQLite store implements it; a PostgreSQL store could. The pending store is the pipeline's write-ahead
log: one table of envelopes, each with an attempt count, a next-attempt time and, while a process holds it
in memory, a lease naming that process. A lease lasts as long as its owner lives: no other process may
claim the row meanwhile, however long delivery takes; once the owner stops beating, a live process adopts
its rows. A row is deleted only once OpenSearch confirmed its event. Rows OpenSearch rejected for good, or
that ran out of attempts or time, move to the dead-letter table. (The SQLite store keeps the rows in flight,
never tried yet, in a table of their own, to write less per commit: docs/delivery.md, "Store layout".)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from ..envelope import Envelope
from ..outcomes import Failure
from .lookup import StoredReceipts

__all__ = ["DeadLetter", "Failure", "PendingStatistics", "PendingStore"]


@dataclass(frozen=True)
class DeadLetter:
    id: int
    log_id: str
    index: str
    document: bytes
    attempts: int
    reason: str
    failed_at: float


@dataclass(frozen=True)
class PendingStatistics:
    rows: int
    # Bytes of the documents waiting: what PENDING_MAX_BYTES caps.
    bytes: int
    oldest_received_at: float | None
    attempts_histogram: dict[int, int]
    dead_letter_rows: int
    # Bytes of the dead letters' documents: what DEAD_LETTER_MAX_BYTES bounds.
    dead_letter_bytes: int

    def with_in_flight(self, count: int, size: int, oldest: float | None) -> "PendingStatistics":
        """These figures and events in flight besides (never tried yet: attempt 0)."""
        histogram = dict(self.attempts_histogram)
        if count:
            histogram[0] = histogram.get(0, 0) + count
        oldest = min((t for t in (self.oldest_received_at, oldest) if t is not None), default=None)
        return replace(self, rows=self.rows + count, bytes=self.bytes + size, oldest_received_at=oldest,
                       attempts_histogram=histogram)


class PendingStore(Protocol):
    # -- the pipeline ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store and start beating: from now until `close`, this process's leases hold."""

    async def close(self) -> None:
        """Finish queued writes, stop beating: rows still leased to this process can be adopted at once."""

    def check_room(self) -> None:
        """Raise StoreFull when the backlog (pending documents' bytes) is at its cap, or while the store has
        no room kept for draining it from a full disk."""

    async def add(self, envelopes: list[Envelope], *, leased: bool, enforce_cap: bool = True) -> None:
        """Insert envelopes (setting their `pending_id`); a leased row is this process's until it is
        delivered, retried, dead-lettered or released. With `enforce_cap`, raise StoreFull instead when the
        backlog is at its cap."""

    def add_in_flight_now(self, envelopes: list[Envelope]) -> bool:
        """`add(envelopes, leased=True)` when it needs no wait (the write is kept once made: no fsync to wait
        for), and True; False, having done nothing, when it needs one: the caller then awaits `add`."""

    async def delivered(self, envelopes: list[Envelope]) -> None:
        """Delete the rows of delivered envelopes (envelopes without a row are ignored)."""

    async def retry_later(self, failures: list[Failure], *, count_attempt: bool) -> None:
        """Keep failed envelopes for a later attempt, with backoff, ending their leases; past the attempt
        limit, dead-letter them. Rows another process holds now are left to it."""

    async def dead_letter(self, failures: list[Failure]) -> None:
        """Move envelopes OpenSearch rejected for good to the dead-letter table."""

    async def release(self, envelopes: list[Envelope]) -> None:
        """End this process's lease of rows it holds but will not ship, so the next replay takes them."""

    async def claim_due(self, limit: int) -> list[Envelope]:
        """Lease up to `limit` due rows that nobody holds and return them as envelopes (adopting the rows
        of dead processes first, now and then). Works on a full disk: claiming and deleting delivered rows
        may use the room kept for draining."""

    async def statistics(self) -> PendingStatistics: ...

    async def receipts(self, log_ids: list[str]) -> StoredReceipts:
        """The pending rows and dead letters of these events, every process's (POST /v1/receipts)."""

    async def oldest_unowned_received_at(self) -> float | None:
        """When the oldest row nobody holds was received (None when there is none); cheap: read on a timer."""

    # -- upkeep, by one janitor per store ------------------------------------------------------------

    async def adopt_orphans(self) -> int:
        """Free the rows leased to processes that stopped beating, so they can be claimed; returns how many."""

    async def expire_pending(self, older_than_days: float) -> int:
        """Move pending rows nobody holds, received more than that long ago, to dead-letter as expired."""

    async def purge_dead_letters(self, older_than_days: float, reason: str | None = None) -> int:
        """Delete dead letters older than that (whose reason contains `reason`, ignoring case)."""

    async def trim_dead_letters(self) -> int:
        """Delete the oldest dead letters until they fit in their bound; returns how many went."""

    async def reclaim_space(self) -> int:
        """Give free space back to the file system when it is a sizeable part of the store; returns bytes."""

    # -- the operator's tools ------------------------------------------------------------------------

    async def make_all_due(self) -> int:
        """Every row nobody holds becomes due now; returns how many waited."""

    async def list_dead_letters(self, reason: str | None, limit: int) -> list[DeadLetter]: ...

    async def requeue_dead_letters(self, reason: str | None) -> int:
        """Move dead letters back to pending, due now with a fresh attempt count; returns how many."""
