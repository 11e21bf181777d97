"""Every metric the collector exports, declared once, named `event_collector_<name>_<unit>_total`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

events_received = Counter(
    "event_collector_events_received_total",
    "Events answered, by outcome: created (buffered), pending (stored), rejected (4xx), unavailable (503)",
    ["outcome"], registry=REGISTRY,
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
    "event_collector_bulk_requests_total", "_bulk requests, by result: ok, failed, unreachable",
    ["result"], registry=REGISTRY,
)
bulk_duration = Histogram(
    "event_collector_bulk_request_duration_seconds", "Time of one _bulk request", registry=REGISTRY,
)
buffer_events = Gauge("event_collector_buffer_events", "Events waiting in the in-memory buffer", registry=REGISTRY)
