"""The book of events this process accepted and has not settled yet, for receipts (POST /v1/receipts).

An event goes in when `Collector.accept` put it into the buffer, and comes out when the delivery policy
settled it: delivered, dead-lettered, or kept in the pending store (a receipt then reads the store). That is
one dict insert at accept and one delete at settlement; events that go straight to the store (the buffer was
full) never enter it. The book holds references to envelopes the buffer and the senders hold anyway.

Delivered events are remembered a little longer (two generations of RECENTLY_DELIVERED_SECONDS): OpenSearch
makes a document searchable only at its next refresh (a second by default), and without this memory an
event would read `unknown` between its delivery and that refresh. That costs one more insert per delivered
event; a generation swap drops a whole generation at once.

Bounded: QUEUE_CAPACITY plus the batches the senders hold (`capacity`); past it (a path that settles
without telling the book would be a bug) the oldest entries go first. Delivered ones are kept at most
`capacity` per generation (plus the batch that fills it).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from .envelope import Envelope

# Longer than OpenSearch's default refresh interval (1 s), so that a delivered event is searchable by the time
# the book forgets it.
RECENTLY_DELIVERED_SECONDS = 2.0


class InFlightBook:
    def __init__(self, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = max(1, capacity)
        self._clock = clock
        self._in_flight: dict[str, Envelope] = {}
        self._delivered: dict[str, Envelope] = {}
        self._delivered_before: dict[str, Envelope] = {}
        self._generation_started = clock()

    def __len__(self) -> int:
        return len(self._in_flight)

    def accepted(self, envelopes: Iterable[Envelope]) -> None:
        """Events now in the buffer (the caller offered them there in the same step of the event loop)."""
        book = self._in_flight
        for envelope in envelopes:
            book[envelope.log_id] = envelope
        while len(book) > self.capacity:
            del book[next(iter(book))]

    def delivered(self, envelopes: list[Envelope]) -> None:
        """OpenSearch confirmed these (2xx or 409): remembered as indexed until they are surely searchable."""
        if not envelopes:
            return
        now = self._clock()
        if now - self._generation_started >= RECENTLY_DELIVERED_SECONDS or len(self._delivered) >= self.capacity:
            self._delivered_before, self._delivered = self._delivered, {}
            self._generation_started = now
        book, delivered = self._in_flight, self._delivered
        for envelope in envelopes:
            book.pop(envelope.log_id, None)
            delivered[envelope.log_id] = envelope

    def settled(self, envelopes: Iterable[Envelope]) -> None:
        """These are kept in the pending store now (to wait, or dead-lettered): a receipt reads them there."""
        book = self._in_flight
        for envelope in envelopes:
            book.pop(envelope.log_id, None)

    def look_up(self, log_id: str) -> tuple[str, Envelope] | None:
        """("indexed", envelope) for one delivered a moment ago (indexed comes first, as in a receipt: a resend
        of it may be in flight again), ("in_flight", envelope), or None."""
        envelope = self._delivered.get(log_id) or self._delivered_before.get(log_id)
        if envelope is not None:
            return "indexed", envelope
        envelope = self._in_flight.get(log_id)
        return None if envelope is None else ("in_flight", envelope)
