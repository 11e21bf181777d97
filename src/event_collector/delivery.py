"""The delivery policy: what happens to events once OpenSearch answered for them, in one place above both the
shipper (which only says what OpenSearch answered, as an `Outcome`) and the pending store.

Delivered rows are deleted. Failures are kept in the store for a later attempt (the store counts attempts
and dead-letters past MAX_DELIVERY_ATTEMPTS); rejections are dead-lettered. When the store fails, events
go back to the buffer rather than be dropped, and only an event that neither can keep and that has no row
is lost: counted, and logged as CRITICAL. The Collector owns one policy and hands it to every sender.
"""

from __future__ import annotations

import logging

from . import metrics
from .buffer import Buffer
from .envelope import Envelope
from .exceptions import StoreError
from .in_flight import InFlightBook
from .outcomes import Failure, Outcome, count_dead_letters
from .pending import PendingStore

log = logging.getLogger(__name__)


class DeliveryPolicy:
    def __init__(self, store: PendingStore, buffer: Buffer, book: InFlightBook | None = None) -> None:
        """`book`: the Collector's book of events in flight (in_flight.py), told of every event settled."""
        self._store = store
        self._buffer = buffer
        self._book = book if book is not None else InFlightBook(0)
        # Events answered 2xx that could be kept nowhere (logged as CRITICAL).
        self.lost = 0

    async def apply(self, outcome: Outcome) -> bool:
        """Settle every event of `outcome`; True when some went back to the buffer because the store failed."""
        setback = False
        if outcome.delivered:
            metrics.events_delivered.inc(len(outcome.delivered))
            self._book.delivered(outcome.delivered)
            metrics.observe_delivery_lag(envelope.received_at for envelope in outcome.delivered)
        try:
            await self._store.delivered(outcome.delivered)
        except StoreError as exc:
            # The events are in OpenSearch; a row left behind is replayed and answered 409.
            log.error("could not delete %d delivered rows: %s", len(outcome.delivered), exc)
        if outcome.retry:
            log.warning("%d events kept for retry, first: %s", len(outcome.retry), outcome.retry[0].reason)
            setback |= await self._keep(outcome.retry, count_attempt=True)
        if outcome.held:
            setback |= await self._keep(outcome.held, count_attempt=False)
        if outcome.rejected:
            log.error("%d events rejected by OpenSearch, dead-lettered, first: %s",
                      len(outcome.rejected), outcome.rejected[0].reason)
            metrics.events_dead_lettered.inc(len(outcome.rejected))
            count_dead_letters(outcome.rejected)
            try:
                await self._store.dead_letter(outcome.rejected)
                self._book.settled(f.envelope for f in outcome.rejected)
            except StoreError as exc:
                log.error("could not dead-letter %d events, retrying them instead: %s", len(outcome.rejected), exc)
                setback = self._requeue([f.envelope for f in outcome.rejected]) or setback
        return setback

    async def _keep(self, failures: list[Failure], *, count_attempt: bool) -> bool:
        """Keep events for a later attempt in the store; in memory when the store fails."""
        metrics.events_retried.inc(len(failures))
        try:
            await self._store.retry_later(failures, count_attempt=count_attempt)
            self._book.settled(f.envelope for f in failures)
        except StoreError as exc:
            log.error("pending store failed, keeping %d events in memory: %s", len(failures), exc)
            return self._requeue([f.envelope for f in failures])
        return False

    def _requeue(self, envelopes: list[Envelope]) -> bool:
        taken = self._buffer.offer_many(envelopes)
        # A left-over event with a row is not lost: the row stays leased to this process and is replayed
        # by whoever adopts it once the process ends. One without a row is.
        lost = sum(1 for envelope in envelopes[taken:] if envelope.pending_id is None)
        if lost:
            self.lost += lost
            metrics.events_lost.inc(lost)
            log.critical("LOST %d events: neither the pending store nor the buffer could keep them", lost)
        return True
