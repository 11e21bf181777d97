"""What became of events handed to OpenSearch: the shipper's answer to the delivery policy above it.

The shipper (shipper/) only sends and classifies; it never touches the pending store or the buffer. It
hands an `Outcome` up, and the Collector's `DeliveryPolicy` (delivery.py) applies it: deletes delivered
rows, keeps failures for later in the store (in memory when the store fails), dead-letters rejections,
and decides and counts what is lost. The pending store takes `Failure`s too, so both import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .envelope import Envelope


@dataclass(frozen=True)
class Failure:
    """An envelope that could not be delivered, and why."""

    envelope: Envelope
    reason: str


@dataclass
class Outcome:
    """A batch's events sorted by what comes next for them."""

    # OpenSearch confirmed them (2xx, or 409: a retry of an event already indexed).
    delivered: list[Envelope] = field(default_factory=list)
    # Their own failure (an item answered 429 or 5xx, a whole answer that fits no batch): an attempt counted.
    retry: list[Failure] = field(default_factory=list)
    # OpenSearch refused them for good (any other 4xx): dead-lettered.
    rejected: list[Failure] = field(default_factory=list)
    # Not tried, through no fault of theirs (a sender stopped by a bug): kept for later, no attempt counted.
    held: list[Failure] = field(default_factory=list)
