"""A shipper: takes batches from the buffer and sends each as one _bulk request."""

from __future__ import annotations

import logging
import time

from .. import metrics
from ..buffer import Buffer
from ..envelope import Envelope
from ..exceptions import OpenSearchUnavailable, StoreError
from ..pending import Failure, PendingStore
from ..retry import Backoff
from .bulk import bulk_body, classify
from .client import OpenSearchClient
from .template import TemplateGuard

log = logging.getLogger(__name__)


class Shipper:
    def __init__(self, buffer: Buffer, client: OpenSearchClient, store: PendingStore,
                 template: TemplateGuard, flush_interval_seconds: float) -> None:
        self._buffer = buffer
        self._client = client
        self._store = store
        self._template = template
        self._flush_interval_seconds = flush_interval_seconds
        # The batch being shipped, so that a shutdown that cancels this shipper can keep it.
        self.in_flight: list[Envelope] = []
        self._setback = False
        self._backoff = Backoff(base_seconds=0.5, max_seconds=10.0)

    async def run(self) -> None:
        """Ship until the buffer is closed and empty."""
        while True:
            batch = await self._buffer.next_batch(self._flush_interval_seconds)
            metrics.buffer_events.set(len(self._buffer))
            if not batch:
                if self._buffer.closed:
                    return
                continue
            self.in_flight = batch
            self._setback = False
            try:
                if not await self.ship(batch):
                    self._setback = True
            except Exception:
                # A bug must not cost the batch, nor this shipper: keep the events for a later attempt.
                log.exception("shipping a batch of %d failed unexpectedly; keeping it for retry", len(batch))
                self._setback = True
                await self._keep([Failure(e, "unexpected shipper error") for e in batch], count_attempt=False)
            self.in_flight = []
            await self._back_off_after_setback()

    async def _back_off_after_setback(self) -> None:
        """After a batch OpenSearch did not take or the store could not keep, wait before the next one.

        Without this, a batch put back into the buffer (store full, OpenSearch down) is taken again at
        once and the shipper spins. The wait doubles up to a cap and ends at the first good batch; it is
        cut short by a stop, so a drain never waits for it.
        """
        if not self._setback:
            self._backoff.reset()
            return
        delay = self._backoff.next_delay()
        if not self._buffer.closed:
            await self._buffer.wait_closed(delay)

    async def ship(self, batch: list[Envelope]) -> bool:
        """Send one batch and settle every event's outcome; False when OpenSearch could not be reached."""
        started = time.perf_counter()
        try:
            await self._template.ensure()
            status, body = await self._client.bulk(bulk_body(batch))
        except OpenSearchUnavailable as exc:
            # OpenSearch never answered: the events are not at fault, so their attempts are not counted.
            metrics.bulk_requests.labels("unreachable").inc()
            log.warning("bulk of %d events not delivered, kept for later: %s", len(batch), exc)
            await self._keep([Failure(e, str(exc)) for e in batch], count_attempt=False)
            return False
        metrics.bulk_duration.observe(time.perf_counter() - started)
        outcome = classify(batch, status, body)
        metrics.bulk_requests.labels(
            "failed" if outcome.retry else "rejected" if outcome.rejected else "ok").inc()
        metrics.events_delivered.inc(len(outcome.delivered))
        try:
            await self._store.delivered(outcome.delivered)
        except StoreError as exc:
            # The events are in OpenSearch; a row left behind is replayed and answered 409.
            log.error("could not delete %d delivered rows: %s", len(outcome.delivered), exc)
        if outcome.retry:
            log.warning("%d events kept for retry, first: %s", len(outcome.retry), outcome.retry[0].reason)
            await self._keep(outcome.retry, count_attempt=True)
            if len(outcome.retry) == len(batch):
                self._setback = True
        if outcome.rejected:
            log.error("%d events rejected by OpenSearch, dead-lettered, first: %s",
                      len(outcome.rejected), outcome.rejected[0].reason)
            metrics.events_dead_lettered.inc(len(outcome.rejected))
            try:
                await self._store.dead_letter(outcome.rejected)
            except StoreError as exc:
                log.error("could not dead-letter %d events, retrying them instead: %s", len(outcome.rejected), exc)
                self._requeue([f.envelope for f in outcome.rejected])
        return True

    async def _keep(self, failures: list[Failure], *, count_attempt: bool) -> None:
        metrics.events_retried.inc(len(failures))
        try:
            await self._store.retry_later(failures, count_attempt=count_attempt)
        except StoreError as exc:
            log.error("pending store failed, keeping %d events in memory: %s", len(failures), exc)
            self._setback = True
            self._requeue([f.envelope for f in failures])

    def _requeue(self, envelopes: list[Envelope]) -> None:
        taken = self._buffer.offer_many(envelopes)
        if taken < len(envelopes):
            log.critical("LOST %d events: neither the pending store nor the buffer could keep them",
                         len(envelopes) - taken)
