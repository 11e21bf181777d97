"""A sender: takes the batcher's batches one at a time and does not let go of one until it is settled.

While OpenSearch does not take requests the sender holds its batch in memory and waits for the breaker;
nothing is written to the store for events that merely wait. A batch refused for its size (413) is split
in halves, and later batches are cut smaller. What OpenSearch answered for each event goes up, as an
`Outcome`, to the policy the sender was given (the Collector's DeliveryPolicy, delivery.py): the sender
keeps nothing itself.
"""

from __future__ import annotations

import logging
from typing import Protocol

from .. import metrics
from ..buffer import Buffer
from ..envelope import Envelope
from ..outcomes import Failure, Outcome
from ..retry import Backoff, Breaker
from .batcher import Batcher
from .worker import Shipper, Verdict

log = logging.getLogger(__name__)

# Batches are never cut below this many bytes when 413s make them smaller.
_SMALLEST_BATCH_BYTES = 64 * 1024


class Settles(Protocol):
    async def apply(self, outcome: Outcome) -> bool:
        """Keep, deliver or dead-letter each event as `outcome` says; True when some could be kept nowhere
        but the buffer (a setback: the sender then waits before taking more)."""


class Sender:
    def __init__(self, batcher: Batcher, shipper: Shipper, breaker: Breaker, buffer: Buffer,
                 policy: Settles) -> None:
        self._batcher = batcher
        self._shipper = shipper
        self._breaker = breaker
        self._buffer = buffer
        self._policy = policy
        self._setbacks = Backoff(base_seconds=0.5, max_seconds=10.0)
        # The events this sender holds and has not settled, so that a stop that cancels it keeps them.
        self.in_flight: list[Envelope] = []

    async def run(self) -> None:
        while (batch := await self._batcher.ready.get()) is not None:
            metrics.buffer_events.set(len(self._buffer))
            setback = False
            try:
                setback = await self.deliver(batch)
            except Exception:
                # A bug must not cost the batch: keep what is not settled for a later attempt.
                log.exception("delivering a batch of %d failed unexpectedly; keeping it for retry", len(batch))
                setback = await self._policy.apply(
                    Outcome(held=[Failure(e, "unexpected sender error") for e in self.in_flight]))
                self.in_flight = []
            finally:
                self._batcher.sender_free()
            await self._wait_after_setback(setback)

    async def deliver(self, batch: list[Envelope]) -> bool:
        """Ship `batch` until OpenSearch answered for every event, and hand each answer to the policy;
        True when the policy had a setback on any part."""
        parts, setback = [batch], False
        while parts:
            self.in_flight = [envelope for part in parts for envelope in part]
            await self._breaker.permit()
            try:
                attempt = await self._shipper.ship(parts[0])
            except BaseException:
                self._breaker.abandoned()
                raise
            self._batcher.concurrency.observe(attempt.latency, attempt.pushback)
            if attempt.outcome is not None:
                self._breaker.succeeded()
                parts.pop(0)
                # The part is settled once the policy applied its outcome: until then it is still in flight,
                # so that a stop that cancels this sender keeps it.
                setback = await self._policy.apply(attempt.outcome) or setback
            elif attempt.verdict is Verdict.TOO_LARGE and len(parts[0]) > 1:
                self._breaker.succeeded()  # OpenSearch answered; only the size was wrong
                parts[0:1] = self._halves(parts[0])
            else:
                metrics.delivery_pauses.inc()
                self._breaker.failed(attempt.reason)
        self.in_flight = []
        return setback

    def _halves(self, batch: list[Envelope]) -> list[list[Envelope]]:
        smaller = max(_SMALLEST_BATCH_BYTES, sum(len(e.document) for e in batch) // 2)
        if smaller < self._buffer.batch_max_bytes:
            log.warning("a bulk request of %d events was too large for OpenSearch (413): batches are now cut "
                        "at %d bytes", len(batch), smaller)
            self._buffer.batch_max_bytes = smaller
        middle = len(batch) // 2
        return [batch[:middle], batch[middle:]]

    async def _wait_after_setback(self, setback: bool) -> None:
        """Events that neither OpenSearch nor the store could keep went back to the buffer: wait before
        taking more, so that a full disk during an outage costs no CPU."""
        if not setback:
            self._setbacks.reset()
        elif not self._buffer.closed:
            await self._buffer.wait_closed(self._setbacks.next_delay())
