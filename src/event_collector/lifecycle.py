"""The Collector owns the pipeline's lifecycle: start, accept, drain, stop."""

from __future__ import annotations

import asyncio
import logging

from . import metrics
from .buffer import Buffer
from .envelope import Envelope
from .exceptions import StoreError
from .pending import open_store
from .pending.janitor import Janitor
from .pending.replayer import Replayer
from .settings import Settings
from .shipper.client import OpenSearchClient
from .shipper.template import TemplateGuard
from .shipper.worker import Shipper

log = logging.getLogger(__name__)

CREATED = "created"
PENDING = "pending"


class Collector:
    def __init__(self, settings: Settings, *, runs_janitor: bool = True) -> None:
        """`runs_janitor`: whether this process does the store's maintenance (one process per store)."""
        self.settings = settings
        self.runs_janitor = runs_janitor
        self.buffer = Buffer(settings.queue_capacity, settings.bulk_size)
        self.store = open_store(settings)
        self.client = OpenSearchClient(settings.opensearch_url, settings.open_search_timeout_seconds,
                                       max_connections=settings.bulk_workers + 2)
        self.template = TemplateGuard(self.client, settings.server_environment)
        self.shippers = [
            Shipper(self.buffer, self.client, self.store, self.template, settings.flush_interval_seconds)
            for _ in range(settings.bulk_workers)
        ]
        self.replayer = Replayer(self.store, self.buffer, settings.pending_replay_interval_seconds,
                                 settings.bulk_size)
        self.janitor = Janitor(
            self.store,
            interval_seconds=settings.janitor_interval_seconds,
            heartbeat_seconds=settings.pending_owner_timeout_seconds / 3,
            pending_retention_days=settings.pending_retention_days,
            dead_letter_retention_days=settings.dead_letter_retention_days,
        )
        self.accepting = False
        self._shipper_tasks: list[asyncio.Task] = []
        self._background: list[asyncio.Task] = []
        self._heartbeat: asyncio.Task | None = None

    async def start(self) -> None:
        await self.store.open()
        await self.client.open()
        self._shipper_tasks = [asyncio.create_task(s.run(), name="shipper") for s in self.shippers]
        self._background = [
            asyncio.create_task(self.template.install_in_background(), name="template"),
            asyncio.create_task(self.replayer.run(), name="replayer"),
        ]
        if self.runs_janitor:
            self._background.append(asyncio.create_task(self.janitor.run(), name="janitor"))
        # Apart from the others, so that stop() can keep it beating while the buffer drains.
        self._heartbeat = asyncio.create_task(self.janitor.run_heartbeat(), name="heartbeat")
        self.accepting = True
        log.info("collector started: %d shippers, buffer of %d, ack mode %s%s", len(self.shippers),
                 self.buffer.capacity, self.settings.ack_mode, ", runs the store's janitor" if self.runs_janitor else "")

    async def accept(self, envelopes: list[Envelope]) -> str:
        """Take events answered 2xx; "created" when all are buffered, "pending" when any was stored.

        In durable mode every event is committed to the pending store first (leased, so the replayer
        leaves it alone while it is in memory). Raises StoreError, before keeping any of them, when the
        events cannot all be kept.
        """
        if self.settings.ack_mode == "durable":
            await self.store.add(envelopes, leased=True)
            taken = self.buffer.offer_many(envelopes)
            if taken < len(envelopes):
                await self._release_overflow(envelopes[taken:])
        elif len(envelopes) <= self.buffer.free_space:
            taken = self.buffer.offer_many(envelopes)
            if taken < len(envelopes):  # the buffer closed while the body was read: keep the rest
                await self.store.add(envelopes[taken:], leased=False, enforce_cap=False)
        else:
            # Not all of it fits: the whole request goes to the store in one transaction, so that it is
            # kept whole or refused whole, never buffered in part and then answered 503.
            await self.store.add(envelopes, leased=False)
            taken = 0
        if taken == len(envelopes):
            return CREATED
        self.replayer.overflowed()
        return PENDING

    async def _release_overflow(self, overflow: list[Envelope]) -> None:
        try:
            await self.store.release(overflow)
        except StoreError as exc:
            # Already committed: they are replayed once their lease runs out. The answer stays 2xx.
            log.warning("could not release %d stored events; they wait for their lease: %s", len(overflow), exc)

    async def stop(self) -> None:
        """Stop accepting, ship what the buffer holds within the grace period, store the rest."""
        self.accepting = False
        self.buffer.close()
        # The heartbeat goes on until the end: while this process drains, its leases must hold.
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self._drain()
        finally:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
                await asyncio.gather(self._heartbeat, return_exceptions=True)
            metrics.buffer_events.set(0)
            await self.client.close()
            await self.store.close()

    async def _drain(self) -> None:
        grace = self.settings.shutdown_grace_seconds
        unfinished: set[asyncio.Task] = set()
        if self._shipper_tasks:
            _, unfinished = await asyncio.wait(self._shipper_tasks, timeout=grace)
        if unfinished:
            log.warning("grace period of %.0f s over: storing what is not shipped yet", grace)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        # Every shipper's batch, not only the cancelled ones': a shipper that died keeps its batch too.
        left = [e for shipper in self.shippers for e in shipper.in_flight] + self.buffer.drain()
        if not left:
            return
        held = [e for e in left if e.pending_id is not None]
        try:
            await self.store.add([e for e in left if e.pending_id is None], leased=False, enforce_cap=False)
        finally:
            await self._release_overflow(held)
        log.info("stored %d events for delivery after restart", len(left))
