"""Sending one batch as one _bulk request, and saying what became of it: the shipper never keeps an event
itself. It answers an `Attempt`: paused (OpenSearch took no request), too large (413), or settled with an
`Outcome` per event (outcomes.py) for the Collector's delivery policy to apply (delivery.py)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from .. import metrics
from ..envelope import Envelope
from ..exceptions import OpenSearchUnavailable
from ..outcomes import Outcome
from ..retry import pause_reason
from .bulk import bulk_body, classify
from .client import OpenSearchClient
from .template import TemplateGuard


class Verdict(enum.Enum):
    SETTLED = "OpenSearch answered for every event: its outcome says which were delivered, retried or rejected"
    PAUSED = "OpenSearch did not take the request; nothing was settled, the caller holds the batch"
    TOO_LARGE = "OpenSearch or a proxy refused the request for its size (413); nothing was settled"


@dataclass
class Attempt:
    verdict: Verdict
    # Per event, when SETTLED.
    outcome: Outcome | None = None
    # Why delivery pauses (PAUSED), or what to raise (TOO_LARGE).
    reason: str = ""
    # For the concurrency controller: how long OpenSearch took to answer (None when it did not), and whether
    # it pushed back (paused, or items to retry: 429s, 5xx, blocks).
    latency: float | None = None
    pushback: bool = True


class Shipper:
    def __init__(self, client: OpenSearchClient, template: TemplateGuard) -> None:
        self._client = client
        self._template = template

    async def ship(self, batch: list[Envelope]) -> Attempt:
        try:
            await self._template.ensure(envelope.index for envelope in batch)
            body_bytes = bulk_body(batch)
            started = time.perf_counter()
            status, body = await self._client.bulk(body_bytes)
        except OpenSearchUnavailable as exc:
            metrics.bulk_requests.labels("unreachable").inc()
            return Attempt(Verdict.PAUSED, reason=str(exc))
        latency = time.perf_counter() - started
        metrics.bulk_duration.observe(latency)
        if status == 413:
            metrics.bulk_requests.labels("too_large").inc()
            return Attempt(Verdict.TOO_LARGE, latency=latency, pushback=False, reason=(
                f"a bulk request of {len(batch)} events was refused as too large (413): raise the body limit of "
                "OpenSearch (http.max_content_length) or of the proxy in front"))
        reason = pause_reason(status, body)
        if reason is not None:
            metrics.bulk_requests.labels("paused").inc()
            return Attempt(Verdict.PAUSED, reason=reason, latency=latency)
        outcome = classify(batch, status, body)
        metrics.bulk_requests.labels("failed" if outcome.retry else "rejected" if outcome.rejected else "ok").inc()
        return Attempt(Verdict.SETTLED, outcome, latency=latency, pushback=bool(outcome.retry))
