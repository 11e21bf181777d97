"""Building a _bulk request and classifying its answer: pure functions, tested on their own.

Per item: 2xx or 409 (the document exists: a retry of an event already delivered) is delivered;
429, 5xx and a cluster block (a write-blocked or read-only index) are retried later; any other 4xx is
the event's own fault (mapping conflict, unparsable document) and goes to dead-letter.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..envelope import Envelope
from ..outcomes import Failure, Outcome, dead_letter_class

_encode = msgspec.json.encode
_RETRYABLE_ERROR_TYPES = {"cluster_block_exception", "es_rejected_execution_exception",
                          "opensearch_rejected_execution_exception"}


def bulk_body(batch: list[Envelope]) -> bytes:
    """`{"create":{"_index":…,"_id":…}}` and the document, a line each. The action line is put together from
    bytes, its index part made once per index: the same bytes msgspec writes for the dict, at a third of the
    cost (this runs for every event delivered)."""
    parts = []
    starts: dict[str, bytes] = {}
    for envelope in batch:
        start = starts.get(envelope.index)
        if start is None:
            start = starts[envelope.index] = b'{"create":{"_index":' + _encode(envelope.index) + b',"_id":'
        parts.append(start + _encode(envelope.log_id) + b"}}")
        parts.append(envelope.document)
    parts.append(b"")
    return b"\n".join(parts)


def classify(batch: list[Envelope], status: int, body: Any) -> Outcome:
    outcome = Outcome()
    items = body.get("items") if isinstance(body, dict) else None
    if not 200 <= status < 300 or not isinstance(items, list) or len(items) != len(batch):
        # An answer the sender did not pause on (retry.pause_reason) or split (413), e.g. a 400 for the whole
        # body, or a 2xx whose items do not match the batch: every event is retried, its attempt counted.
        reason = f"bulk request answered {status}: {_shorten(body)}"
        outcome.retry = [Failure(envelope, reason) for envelope in batch]
        return outcome
    if body.get("errors") is False:
        # OpenSearch says no item failed (a 409 counts as an error there): all delivered, without reading
        # each item, the usual answer.
        outcome.delivered = list(batch)
        return outcome
    for envelope, item in zip(batch, items):
        result = next(iter(item.values())) if isinstance(item, dict) and item else {}
        item_status = result.get("status", 0) if isinstance(result, dict) else 0
        if 200 <= item_status < 300 or item_status == 409:
            outcome.delivered.append(envelope)
            continue
        error = result.get("error") if isinstance(result, dict) else None
        reason = _describe(item_status, error)
        error_type = error.get("type") if isinstance(error, dict) else None
        if item_status == 429 or item_status >= 500 or item_status == 0 or error_type in _RETRYABLE_ERROR_TYPES:
            outcome.retry.append(Failure(envelope, reason))
        else:
            outcome.rejected.append(Failure(envelope, reason, dead_letter_class(error_type, item_status)))
    return outcome


def _describe(status: int, error: Any) -> str:
    if isinstance(error, dict):
        text = f"{status} {error.get('type')}: {error.get('reason')}"
        caused_by = error.get("caused_by")
        if isinstance(caused_by, dict):
            text += f" (caused by {caused_by.get('type')}: {caused_by.get('reason')})"
        return text
    return f"{status} {_shorten(error)}"


def _shorten(value: Any, limit: int = 500) -> str:
    text = value if isinstance(value, str) else _encode(value).decode()
    return text[:limit]
