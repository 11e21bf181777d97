"""Every metric the collector exports, declared once, named `event_collector_<name>_<unit>_total`.

With several worker processes, `serve` sets PROMETHEUS_MULTIPROC_DIR before they start: each process
then writes its values to files there, and `exposition` adds up all processes' values.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

REGISTRY = CollectorRegistry()
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

events_received = Counter(
    "event_collector_events_received_total",
    "Events answered, by outcome: created (buffered), pending (stored), rejected (4xx), unavailable (503)",
    ["outcome"], registry=REGISTRY,
)
# Bound once: looking a label up on every request costs more than the increment.
received_created = events_received.labels("created")
received_pending = events_received.labels("pending")
received_rejected = events_received.labels("rejected")
received_unavailable = events_received.labels("unavailable")
received_rate_limited = events_received.labels("rate_limited")
requests_refused = Counter(
    "event_collector_requests_refused_total",
    "Ingest requests answered 4xx or dropped, by reason: unauthorized, invalid, too_large, timeout, "
    "unsupported_encoding, rate_limited (whole request), aborted (client left before its body was complete)",
    ["reason"], registry=REGISTRY,
)
events_delivered = Counter(
    "event_collector_events_delivered_total", "Events OpenSearch confirmed (2xx or 409)", registry=REGISTRY,
)
events_retried = Counter(
    "event_collector_events_retried_total", "Events kept in the pending store for a later attempt", registry=REGISTRY,
)
events_dead_lettered = Counter(
    "event_collector_events_dead_lettered_total", "Events moved to the dead-letter table", registry=REGISTRY,
)
events_replayed = Counter(
    "event_collector_events_replayed_total", "Pending rows moved back into the buffer", registry=REGISTRY,
)
bulk_requests = Counter(
    "event_collector_bulk_requests_total",
    "_bulk requests, by result: ok (every event delivered), rejected (some dead-lettered, none to retry), "
    "failed (some kept for retry), unreachable (no answer)",
    ["result"], registry=REGISTRY,
)
bulk_duration = Histogram(
    "event_collector_bulk_request_duration_seconds", "Time of one _bulk request", registry=REGISTRY,
)
buffer_events = Gauge("event_collector_buffer_events", "Events waiting in the in-memory buffer", registry=REGISTRY,
                      multiprocess_mode="livesum")


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type, over every worker process when there are several."""
    if os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
