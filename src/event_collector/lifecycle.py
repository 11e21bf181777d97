"""The Collector owns the pipeline's lifecycle: start, accept, drain, stop.

Every background task runs supervised: one that raises is logged and started again after a back-off, so
a bug costs a retry, not a silently dead part of the pipeline. The stop has one budget,
SHUTDOWN_GRACE_SECONDS, counted from the stop signal: requests in progress, then shipping the buffer,
then storing what is left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from . import metrics
from .buffer import Buffer
from .collecting import CREATED, PENDING, StopSignals
from .delivery import DeliveryPolicy
from .envelope import Envelope
from .exceptions import StoreError, StoreFull
from .in_flight import InFlightBook
from .pending import open_store
from .pending.janitor import Janitor
from .pending.replayer import Replayer
from .retry import Backoff, Breaker
from .settings import Settings
from .shipper.batcher import Batcher
from .shipper.client import OpenSearchClient
from .shipper.concurrency import AdaptiveConcurrency
from .shipper.sender import Sender
from .shipper.template import TemplateGuard
from .shipper.worker import Shipper

log = logging.getLogger(__name__)

# How often event_collector_oldest_unindexed_age_seconds is measured: on a timer, never per event.
OLDEST_AGE_INTERVAL_SECONDS = 1.0

class Collector(StopSignals):
    def __init__(self, settings: Settings, *, runs_janitor: bool = True) -> None:
        """`runs_janitor`: whether this process does the store's maintenance (one process per store)."""
        super().__init__()
        self.settings = settings
        self.runs_janitor = runs_janitor
        self.buffer = Buffer(settings.queue_capacity, settings.bulk_size, settings.bulk_max_bytes)
        self.store = open_store(settings)
        self.client = OpenSearchClient.from_settings(settings, max_connections=settings.bulk_workers + 2)
        self.template = TemplateGuard(self.client, settings.server_environment)
        self.breaker = Breaker(base_seconds=1.0, max_seconds=30.0)
        self.batcher = Batcher(self.buffer, settings.bulk_workers, settings.flush_interval_seconds,
                               settings.bulk_linger_seconds,
                               AdaptiveConcurrency(settings.bulk_workers, adaptive=settings.bulk_adaptive_concurrency))
        # Accepted events not settled yet, for receipts: at most the buffer and the senders' batches.
        self.book = InFlightBook(settings.queue_capacity + settings.bulk_workers * settings.bulk_size)
        # What OpenSearch's answers mean for the store and the buffer, decided in one place for every sender.
        self.delivery = DeliveryPolicy(self.store, self.buffer, self.book)
        shipper = Shipper(self.client, self.template)
        self.senders = [Sender(self.batcher, shipper, self.breaker, self.buffer, self.delivery)
                        for _ in range(settings.bulk_workers)]
        self.replayer = Replayer(self.store, self.buffer, self.breaker, settings.pending_replay_interval_seconds,
                                 settings.bulk_size)
        self.janitor = Janitor(
            self.store,
            interval_seconds=settings.janitor_interval_seconds,
            pending_retention_days=settings.pending_retention_days,
            dead_letter_retention_days=settings.dead_letter_retention_days,
        )
        self.accepting = False
        self._durable = settings.ack_mode == "durable"
        # Whether start() ran to its end, and when a stop signal came (the stop's budget counts from it):
        # both decide /readyz (api/probes.py).
        self.started = False
        # The last failure to write accepted events to the store, and when (time.monotonic()); cleared by
        # the next write that succeeds.
        self.store_failure: tuple[str, float] | None = None
        # Whether stop() ran to its end with every event it held shipped or stored.
        self.stopped_cleanly = False
        self._shipping_tasks: list[asyncio.Task] = []
        self._background: list[asyncio.Task] = []

    async def start(self) -> None:
        await self.store.open()
        await self.client.open()
        self._shipping_tasks = [_supervise("batcher", self.batcher.run)]
        self._shipping_tasks += [_supervise(f"sender-{n}", sender.run) for n, sender in enumerate(self.senders)]
        self._background = [
            _supervise("template", self.template.install_in_background),
            _supervise("replayer", self.replayer.run),
            _supervise("oldest-age", self._measure_oldest_unindexed),
        ]
        if self.runs_janitor:
            self._background.append(_supervise("janitor", self.janitor.run))
        self.accepting = True
        self.started = True
        log.info("collector started: %d shippers, buffer of %d, ack mode %s%s", len(self.senders),
                 self.buffer.capacity, self.settings.ack_mode, ", runs the store's janitor" if self.runs_janitor else "")

    async def _measure_oldest_unindexed(self) -> None:
        """The age of the oldest event this process accepted and has not seen indexed: the buffer's head, the
        first event of each sender's batch, and the store's oldest row nobody holds (rows this process holds
        are in the buffer or a batch; a dead process's are freed for adoption within PENDING_OWNER_TIMEOUT)."""
        while True:
            now = time.time()
            times = [self.buffer.oldest_received_at()]
            times += [sender.in_flight[0].received_at for sender in self.senders if sender.in_flight]
            try:
                times.append(await self.store.oldest_unowned_received_at())
            except StoreError as exc:  # said where the store is written; the gauge goes on without it
                log.debug("oldest pending row unknown: %s", exc)
            oldest = min((t for t in times if t is not None), default=None)
            metrics.oldest_unindexed_age.set(0.0 if oldest is None else max(0.0, now - oldest))
            await asyncio.sleep(OLDEST_AGE_INTERVAL_SECONDS)

    async def accept(self, envelopes: list[Envelope]) -> str:
        """Take events answered 2xx; "created" when all are buffered, "pending" when any was stored.

        In durable mode every event is committed to the pending store first: leased to this process while
        it is in memory, so the replayer leaves it alone; unleased when the buffer has no room, for the
        replayer to bring back. Raises StoreError, before keeping any of them, when the events cannot all
        be kept.
        """
        status = self.accept_now(envelopes)
        if status is not None:
            return status
        try:
            status = await self._keep(envelopes)
        except StoreFull:
            raise  # the cap is no failure of the store: /readyz reads it from the store itself
        except StoreError as exc:
            self.store_failure = (str(exc), time.monotonic())
            raise
        self.store_failure = None
        return status

    def accept_now(self, envelopes: list[Envelope]) -> str | None:
        """`accept` when it needs no wait, the usual request: room in the buffer, and in durable mode a journal
        write that is kept once made (no fsync to wait for). None, having kept nothing, when it must wait: the
        caller then awaits `accept`. The fast path answers from here within the read that brought the request
        (api/fastpath.py), without a coroutine."""
        if not envelopes:
            return CREATED  # all screened out by the rules (docs/rules.md): nothing to keep, a 2xx all the same
        buffer = self.buffer
        if buffer.closed or len(envelopes) > buffer.free_space:
            return None
        if self._durable:
            try:
                if not self.store.add_in_flight_now(envelopes):
                    return None
            except StoreFull:
                raise
            except StoreError as exc:
                self.store_failure = (str(exc), time.monotonic())
                raise
        # All fit: the room was checked above, and nothing else ran since.
        buffer.offer_many(envelopes)
        self.book.accepted(envelopes)
        self.store_failure = None
        return CREATED

    async def _keep(self, envelopes: list[Envelope]) -> str:
        if self._durable and len(envelopes) <= self.buffer.free_space:
            await self.store.add(envelopes, leased=True)
            taken = self.buffer.offer_many(envelopes)
            self.book.accepted(envelopes if taken == len(envelopes) else envelopes[:taken])
            if taken < len(envelopes):  # others filled the buffer while this commit ran
                await self._release_overflow(envelopes[taken:])
        elif self._durable:
            # The buffer is full (OpenSearch slow or down): the rows wait in the store unleased, written
            # once, for the replayer to bring back when there is room.
            await self.store.add(envelopes, leased=False)
            taken = 0
        elif len(envelopes) <= self.buffer.free_space:
            taken = self.buffer.offer_many(envelopes)
            self.book.accepted(envelopes if taken == len(envelopes) else envelopes[:taken])
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
            # Committed and leased to this live process, so nobody else replays them: the replayer
            # offers them to the buffer itself once there is room. The answer stays 2xx.
            log.warning("could not release %d stored events; the replayer holds them: %s", len(overflow), exc)
            self.replayer.hold(overflow)

    async def stop(self) -> None:
        """Stop accepting, ship what the buffer holds within what is left of the grace, store the rest."""
        self.accepting = False
        self.buffer.close()
        # The store beats from its open to its close, the last step: while this process drains, its leases hold.
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        try:
            self.stopped_cleanly = await self._drain()
        except StoreError as exc:
            log.critical("LOST the events held in memory: the pending store could not take them at stop: %s", exc)
        finally:
            metrics.buffer_events.set(0)
            metrics.oldest_unindexed_age.set(0)
            await self.client.close()
            await self.store.close()

    async def _drain(self) -> bool:
        """Ship, then store what is left; True when nothing was lost on the way."""
        # While OpenSearch does not take requests, waiting for it would only spend the grace.
        grace = 0.0 if self.breaker.is_open else self.grace_left()
        unfinished: set[asyncio.Task] = set()
        if self._shipping_tasks:
            _, unfinished = await asyncio.wait(self._shipping_tasks, timeout=grace)
        if unfinished and self.breaker.is_open:
            log.warning("OpenSearch does not take requests (%s): storing what is not shipped yet", self.breaker.reason)
        elif unfinished:
            log.warning("grace period of %.0f s over: storing what is not shipped yet",
                        self.settings.shutdown_grace_seconds)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        # Every sender's batch, not only the cancelled ones': a sender that failed keeps its batch too.
        left = [e for sender in self.senders for e in sender.in_flight] + self.replayer.release_held()
        left += self.batcher.take_ready()
        left += self.buffer.drain()
        if left:
            held = [e for e in left if e.pending_id is not None]
            try:
                await self.store.add([e for e in left if e.pending_id is None], leased=False, enforce_cap=False)
            finally:
                await self._release_overflow(held)
            log.info("stored %d events for delivery after restart", len(left))
        return self.delivery.lost == 0


def _supervise(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task:
    """Run a background task for the life of the collector, started again after a back-off if it raises."""

    async def supervised() -> None:
        restarts = Backoff(base_seconds=1.0, max_seconds=60.0)
        while True:
            try:
                await run()
                return
            except Exception:
                delay = restarts.next_delay()
                log.exception("task %s failed; starting it again in %.1f s", name, delay)
                metrics.task_restarts.labels(name.split("-")[0]).inc()
                await asyncio.sleep(delay)

    return asyncio.create_task(supervised(), name=name)

