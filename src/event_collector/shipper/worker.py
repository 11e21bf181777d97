"""Sending one batch as one _bulk request and settling every event's outcome."""

from __future__ import annotations

import enum
import logging
import time

from .. import metrics
from ..buffer import Buffer
from ..envelope import Envelope
from ..exceptions import OpenSearchUnavailable, StoreError
from ..pending import Failure, PendingStore
from ..retry import pause_reason
from .bulk import BulkOutcome, bulk_body, classify
from .client import OpenSearchClient
from .template import TemplateGuard

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    SETTLED = "every event delivered, kept for retry or dead-lettered"
    PAUSED = "OpenSearch did not take the request; nothing was settled, the caller holds the batch"
    TOO_LARGE = "OpenSearch or a proxy refused the request for its size (413); nothing was settled"


class Shipper:
    def __init__(self, buffer: Buffer, client: OpenSearchClient, store: PendingStore,
                 template: TemplateGuard) -> None:
        self._buffer = buffer
        self._client = client
        self._store = store
        self._template = template
        # Why the last request paused delivery.
        self.pause_reason = ""
        # Set when events could be kept neither in the store nor by OpenSearch and went back to the buffer.
        self.setback = False
        # Events answered 2xx that this shipper could keep nowhere (logged as CRITICAL).
        self.lost = 0
        # What the last request tells the concurrency controller: how long OpenSearch took to answer (None
        # when it did not), and whether it pushed back (paused, or items to retry: 429s, 5xx, blocks).
        self.latency: float | None = None
        self.pushback = False

    async def ship(self, batch: list[Envelope]) -> Verdict:
        self.setback = False
        self.latency, self.pushback = None, True
        try:
            await self._template.ensure()
            body_bytes = bulk_body(batch)
            started = time.perf_counter()
            status, body = await self._client.bulk(body_bytes)
        except OpenSearchUnavailable as exc:
            metrics.bulk_requests.labels("unreachable").inc()
            self.pause_reason = str(exc)
            return Verdict.PAUSED
        self.latency = time.perf_counter() - started
        metrics.bulk_duration.observe(self.latency)
        if status == 413:
            metrics.bulk_requests.labels("too_large").inc()
            self.pushback = False
            self.pause_reason = (f"a bulk request of {len(batch)} events was refused as too large (413): raise the "
                                 "body limit of OpenSearch (http.max_content_length) or of the proxy in front")
            return Verdict.TOO_LARGE
        reason = pause_reason(status, body)
        if reason is not None:
            metrics.bulk_requests.labels("paused").inc()
            self.pause_reason = reason
            return Verdict.PAUSED
        outcome = classify(batch, status, body)
        self.pushback = bool(outcome.retry)
        await self._settle(batch, outcome)
        return Verdict.SETTLED

    async def _settle(self, batch: list[Envelope], outcome: BulkOutcome) -> None:
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
            await self.keep(outcome.retry, count_attempt=True)
        if outcome.rejected:
            log.error("%d events rejected by OpenSearch, dead-lettered, first: %s",
                      len(outcome.rejected), outcome.rejected[0].reason)
            metrics.events_dead_lettered.inc(len(outcome.rejected))
            try:
                await self._store.dead_letter(outcome.rejected)
            except StoreError as exc:
                log.error("could not dead-letter %d events, retrying them instead: %s", len(outcome.rejected), exc)
                self._requeue([f.envelope for f in outcome.rejected])

    async def keep(self, failures: list[Failure], *, count_attempt: bool) -> None:
        """Keep events for a later attempt in the store; in memory when the store fails."""
        metrics.events_retried.inc(len(failures))
        try:
            await self._store.retry_later(failures, count_attempt=count_attempt)
        except StoreError as exc:
            log.error("pending store failed, keeping %d events in memory: %s", len(failures), exc)
            self._requeue([f.envelope for f in failures])

    def _requeue(self, envelopes: list[Envelope]) -> None:
        self.setback = True
        taken = self._buffer.offer_many(envelopes)
        # A left-over event with a row is not lost: the row stays leased to this process and is replayed
        # by whoever adopts it once the process ends. One without a row is.
        lost = sum(1 for envelope in envelopes[taken:] if envelope.pending_id is None)
        if lost:
            self.lost += lost
            metrics.events_lost.inc(lost)
            log.critical("LOST %d events: neither the pending store nor the buffer could keep them", lost)
