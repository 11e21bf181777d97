"""What became of events handed to OpenSearch: the shipper's answer to the delivery policy above it.

The shipper (shipper/) only sends and classifies; it never touches the pending store or the buffer. It
hands an `Outcome` up, and the Collector's `DeliveryPolicy` (delivery.py) applies it: deletes delivered
rows, keeps failures for later in the store (in memory when the store fails), dead-letters rejections,
and decides and counts what is lost. The pending store takes `Failure`s too, so both import them from here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from . import metrics
from .envelope import Envelope


@dataclass(frozen=True)
class Failure:
    """An envelope that could not be delivered, and why."""

    envelope: Envelope
    reason: str
    # For a rejection, one of metrics.DEAD_LETTER_REASON_CLASSES (dead_letter_class): what an operator's
    # alert groups dead letters by.
    reason_class: str = "other"


# OpenSearch's error types, by what the operator has to fix: the index's mapping, the size of the event, or
# the event itself. Any type not named here counts as "other".
_MAPPING_ERROR_TYPES = {"mapper_parsing_exception", "strict_dynamic_mapping_exception", "document_parsing_exception",
                        "mapper_exception", "illegal_argument_exception"}
_TOO_LARGE_ERROR_TYPES = {"max_bytes_length_exceeded_exception", "content_too_long_exception",
                          "too_long_frame_exception"}
_INVALID_ERROR_TYPES = {"parse_exception", "json_parse_exception", "x_content_parse_exception",
                        "action_request_validation_exception", "validation_exception",
                        "invalid_index_name_exception", "invalid_type_name_exception", "not_x_content_exception"}


def dead_letter_class(error_type: object, status: int) -> str:
    """The bounded class of a refused event, from the `type` of OpenSearch's error (and the item's status)."""
    if not isinstance(error_type, str):  # an answer of another shape (a proxy's) names no type
        error_type = ""
    if error_type in _MAPPING_ERROR_TYPES or error_type.startswith("mapper_"):
        return "mapping"
    if status == 413 or error_type in _TOO_LARGE_ERROR_TYPES:
        return "too_large"
    if error_type in _INVALID_ERROR_TYPES:
        return "invalid"
    if status == 409 or error_type == "version_conflict_engine_exception":
        return "version_conflict"
    return "other"


def count_dead_letters(rejected: list[Failure]) -> None:
    """event_collector_dead_letters_total by reason class: one increment per class, not per event."""
    for reason_class, count in Counter(failure.reason_class for failure in rejected).items():
        metrics.dead_letters.labels(reason_class).inc(count)


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
