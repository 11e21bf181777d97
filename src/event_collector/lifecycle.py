"""The Collector owns the pipeline's lifecycle: start, accept, drain, stop."""

from __future__ import annotations

import asyncio
import logging

from . import metrics
from .buffer import Buffer
from .envelope import Envelope
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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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

    async def start(self) -> None:
        await self.store.open()
        await self.client.open()
        self._shipper_tasks = [asyncio.create_task(s.run(), name="shipper") for s in self.shippers]
        self._background = [
            asyncio.create_task(self.template.install_in_background(), name="template"),
            asyncio.create_task(self.replayer.run(), name="replayer"),
            asyncio.create_task(self.janitor.run(), name="janitor"),
            asyncio.create_task(self.janitor.run_heartbeat(), name="heartbeat"),
        ]
        self.accepting = True
        log.info("collector started: %d shippers, buffer of %d, ack mode %s",
                 len(self.shippers), self.buffer.capacity, self.settings.ack_mode)

    async def accept(self, envelopes: list[Envelope]) -> str:
        """Take events answered 2xx; "created" when all are buffered, "pending" when any was stored.

        In durable mode every event is committed to the pending store first (leased, so the replayer
        leaves it alone while it is in memory). Raises StoreError when an event cannot be kept.
        """
        durable = self.settings.ack_mode == "durable"
        if durable:
            await self.store.add(envelopes, leased=True)
        taken = self.buffer.offer_many(envelopes)
        if taken == len(envelopes):
            return CREATED
        overflow = envelopes[taken:]
        if durable:
            await self.store.release(overflow)
        else:
            await self.store.add(overflow, leased=False)
        self.replayer.overflowed()
        return PENDING

    async def stop(self) -> None:
        """Stop accepting, ship what the buffer holds within the grace period, store the rest."""
        self.accepting = False
        self.buffer.close()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

        grace = self.settings.shutdown_grace_seconds
        _, unfinished = await asyncio.wait(self._shipper_tasks, timeout=grace) if self._shipper_tasks else ((), ())
        left: list[Envelope] = []
        if unfinished:
            log.warning("grace period of %.0f s over: storing what is not shipped yet", grace)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            left = [e for s in self.shippers for e in s.in_flight]
        left += self.buffer.drain()
        if left:
            await self.store.release([e for e in left if e.pending_id is not None])
            await self.store.add([e for e in left if e.pending_id is None], leased=False, enforce_cap=False)
            log.info("stored %d events for delivery after restart", len(left))
        metrics.buffer_events.set(0)
        await self.client.close()
        await self.store.close()
