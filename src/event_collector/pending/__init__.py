"""The pending store: where events wait when the buffer is full or OpenSearch failed.

Here are the PendingStore interface (base.py), its SQLite implementation (sqlite.py, with its parts: engine,
schema, rows, copying, files_watch, statistics, maintenance, liveness, reserve, and journal/ for durable
mode's events in flight), the janitor that keeps a store healthy and the replayer that feeds due rows back to
the buffer. It may import only the foundations (exceptions, settings, metrics, envelope, retry, buffer), never
shipper, api, lifecycle or kafka: those are layers above it.
"""

from __future__ import annotations

from ..exceptions import ConfigError
from ..settings import Settings
from .base import DeadLetter, Failure, PendingStatistics, PendingStore
from .sqlite import SqliteStore, statistics_read_only

__all__ = ["DeadLetter", "Failure", "PendingStatistics", "PendingStore", "SqliteStore", "open_store",
           "read_statistics"]


def open_store(settings: Settings, *, recover_damaged: bool = False) -> PendingStore:
    """The store named by DATABASE_URL's scheme (not yet opened).

    Only `serve`, once, before any worker process starts, may move a damaged file aside
    (`recover_damaged`): a worker doing so while its siblings write would strand what they acknowledge
    afterwards in a file nobody replays. Workers and the operator's tools report damage and touch nothing.
    """
    if settings.database_url.startswith("sqlite://"):
        return SqliteStore(
            settings.sqlite_path,
            owner_timeout_seconds=settings.pending_owner_timeout_seconds,
            max_attempts=settings.max_delivery_attempts,
            backoff_base_seconds=settings.retry_backoff_base_seconds,
            backoff_max_seconds=settings.retry_backoff_max_seconds,
            max_bytes=settings.pending_max_bytes,
            dead_letter_max_bytes=settings.dead_letter_max_bytes,
            synchronous=settings.sqlite_synchronous.upper(),
            journal_segment_bytes=settings.journal_segment_bytes,
            recover_damaged=recover_damaged,
            reserve_bytes=settings.pending_reserve_bytes,
        )
    raise ConfigError(f"DATABASE_URL scheme not supported: {settings.database_url!r}")


async def read_statistics(settings: Settings) -> PendingStatistics:
    """The figures of the store named by DATABASE_URL, read without writing anything: they can be read from a
    full disk, exactly when they are needed."""
    if settings.database_url.startswith("sqlite://"):
        return await statistics_read_only(settings.sqlite_path)
    raise ConfigError(f"DATABASE_URL scheme not supported: {settings.database_url!r}")
