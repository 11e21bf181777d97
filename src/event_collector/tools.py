"""The operator's commands on the pending store: they work on the same store while the server runs."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from .buffer import Buffer
from .delivery import DeliveryPolicy
from .exceptions import OpenSearchUnavailable, StoreError
from .pending import PendingStore, open_store, read_statistics
from .pending.reserve import Reserve
from .settings import Settings
from .shipper.client import OpenSearchClient
from .shipper.template import TemplateGuard
from .shipper.worker import Shipper


async def pending_stats(settings: Settings) -> str:
    """The figures, read without writing anything to the store's volume: they answer on a full disk."""
    _require_store(settings)
    stats = await read_statistics(settings)
    age = "-" if stats.oldest_received_at is None else _duration(time.time() - stats.oldest_received_at)
    lines = [
        f"pending rows       {stats.rows}",
        f"pending bytes      {stats.bytes}",
        f"oldest pending     {age}",
        f"dead-letter rows   {stats.dead_letter_rows}",
        f"dead-letter bytes  {stats.dead_letter_bytes}",
        "attempts histogram " + (", ".join(f"{k}: {v}" for k, v in sorted(stats.attempts_histogram.items())) or "-"),
        f"disk reserve       {_reserve_state(settings)}",
    ]
    return "\n".join(lines)


def _reserve_state(settings: Settings) -> str:
    reserve = Reserve(settings.sqlite_path, settings.pending_reserve_bytes)
    if not reserve.size_bytes:
        return "off (PENDING_RESERVE_BYTES=0)"
    if reserve.held:
        return f"{reserve.size_bytes} bytes held"
    return (f"missing (spent on draining a full disk, or no room for it): events that must be stored are refused "
            f"until the volume has {2 * reserve.size_bytes} bytes free")


async def pending_replay(settings: Settings) -> str:
    """Deliver every pending row now, from this process, through the same shipper code as the server.

    Stops at the first bulk request OpenSearch does not take, leaving the rows as they were (due, nobody's)
    for the server's replayer, and says so with an error."""
    async with _store(settings) as store:
        made_due = await store.make_all_due()
        client = OpenSearchClient.from_settings(settings)
        await client.open()
        try:
            # The server's policy: a batch's failures wait in the store again, rejections are dead-lettered.
            delivery = DeliveryPolicy(store, Buffer(settings.bulk_size, settings.bulk_size))
            shipper = Shipper(client, TemplateGuard(client, settings.server_environment))
            shipped, stopped = 0, ""
            while batch := await store.claim_due(settings.bulk_size):
                attempt = await shipper.ship(batch)
                if attempt.outcome is None:
                    await store.release(batch)
                    stopped = attempt.reason
                    break
                await delivery.apply(attempt.outcome)
                shipped += len(batch)
        finally:
            await client.close()
        left = (await store.statistics()).rows
    outcome = f"{made_due} rows made due; {shipped} shipped now; {left} still pending"
    if stopped:
        raise OpenSearchUnavailable(f"stopped, the rest is left for the server's replayer: {stopped}; {outcome}")
    return outcome


async def dead_letter_list(settings: Settings, reason: str | None, limit: int) -> str:
    async with _store(settings) as store:
        letters = await store.list_dead_letters(reason, limit)
    lines = [f"{'id':>8}  {'failed at (UTC)':19}  {'attempts':>8}  {'log_id':36}  reason"]
    for letter in letters:
        failed_at = datetime.fromtimestamp(letter.failed_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{letter.id:>8}  {failed_at}  {letter.attempts:>8}  {letter.log_id!s:36}  {letter.reason}")
    return "\n".join(lines)


async def dead_letter_requeue(settings: Settings, reason: str | None) -> str:
    async with _store(settings) as store:
        moved = await store.requeue_dead_letters(reason)
    return f"{moved} dead letters moved back to pending; the replayer delivers them"


async def dead_letter_purge(settings: Settings, older_than_days: float) -> str:
    async with _store(settings) as store:
        purged = await store.purge_dead_letters(older_than_days)
    return f"{purged} dead letters deleted"


class _store:
    """The configured store, opened for one command."""

    def __init__(self, settings: Settings) -> None:
        _require_store(settings)
        self._store = open_store(settings)

    async def __aenter__(self) -> PendingStore:
        await self._store.open()
        return self._store

    async def __aexit__(self, *exc_info: object) -> None:
        await self._store.close()


def _require_store(settings: Settings) -> None:
    if not os.path.exists(settings.sqlite_path):
        raise StoreError(f"no pending store at {settings.sqlite_path} (check DATABASE_URL)")


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"
