"""What every pending store offers; the SQLite store implements it, PostgreSQL may later.

The pending store is the pipeline's write-ahead log: one table of envelopes, each with an attempt
count, a next-attempt time and a lease. A row is deleted only once OpenSearch confirmed its event.
Rows OpenSearch rejected for good, or that ran out of attempts or time, move to the dead-letter table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..envelope import Envelope


@dataclass(frozen=True)
class Failure:
    """An envelope that could not be delivered, and why."""

    envelope: Envelope
    reason: str


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
    bytes: int
    oldest_received_at: float | None
    attempts_histogram: dict[int, int]
    dead_letter_rows: int


class PendingStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def check_room(self) -> None:
        """Raise StoreFull when the store is at its cap."""

    async def add(self, envelopes: list[Envelope], *, leased: bool, enforce_cap: bool = True) -> None:
        """Insert envelopes (setting their `pending_id`); a leased row is not replayed until its lease ends.

        With `enforce_cap`, raise StoreFull instead when the store is at its cap."""

    async def delivered(self, envelopes: list[Envelope]) -> None:
        """Delete the rows of delivered envelopes (envelopes without a row are ignored)."""

    async def retry_later(self, failures: list[Failure], *, count_attempt: bool) -> None:
        """Keep failed envelopes for a later attempt, with backoff; past the attempt limit, dead-letter them."""

    async def dead_letter(self, failures: list[Failure]) -> None:
        """Move envelopes OpenSearch rejected for good to the dead-letter table."""

    async def release(self, envelopes: list[Envelope]) -> None:
        """End the lease of rows still held in memory, so the next replay takes them at once."""

    async def claim_due(self, limit: int) -> list[Envelope]:
        """Lease up to `limit` rows whose next attempt is due and return them as envelopes."""
