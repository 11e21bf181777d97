"""Every metric the collector exports, declared once, named `event_collector_<name>_<unit>_total`.

With several worker processes, `serve` sets PROMETHEUS_MULTIPROC_DIR before they start: each process
then writes its values to files there, and `exposition` adds up all processes' values.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from pathlib import Path
from typing import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

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
# Connection-level refusals happen before a request is read, so they have a counter of their own.
connections_refused = Counter(
    "event_collector_connections_refused_total",
    "Connections answered and closed before a request was read, by reason: over_capacity (MAX_CONNECTIONS), "
    "head_too_large (414/431), head_timeout (no complete head within HEADER_READ_TIMEOUT_SECONDS)",
    ["reason"], registry=REGISTRY,
)
# Added to in bulk once per turn of the event loop (api/fastpath.py, Tally), not once per request.
fast_path_answers = Counter(
    "event_collector_fast_path_answers_total",
    "Requests answered by the single-event fast path below ASGI (docs/http.md), whatever the status",
    registry=REGISTRY,
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
# The classes of event_collector_dead_letters_total{reason_class}: a closed set (outcomes.dead_letter_class), never
# OpenSearch's free-form text, so that the series stay few. Every class is exported from the start at 0, so an
# alert on its rate has a series to read before the first dead letter.
DEAD_LETTER_REASON_CLASSES = ("mapping", "too_large", "invalid", "version_conflict", "other",
                              "attempts_exhausted", "expired", "unreadable")
dead_letters = Counter(
    "event_collector_dead_letters_total",
    "Dead letters by reason class: mapping, too_large, invalid, version_conflict, other (from the type of "
    "OpenSearch's error for a refused event), attempts_exhausted (MAX_DELIVERY_ATTEMPTS), expired "
    "(PENDING_RETENTION_DAYS), unreadable (a pending row that cannot be read)",
    ["reason_class"], registry=REGISTRY,
)
for _reason_class in DEAD_LETTER_REASON_CLASSES:
    dead_letters.labels(_reason_class)
delivery_lag = Histogram(
    "event_collector_delivery_lag_seconds",
    "From an event's 2xx (its received_at) to the bulk response that indexed it (2xx or 409), per event",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=REGISTRY,
)
oldest_unindexed_age = Gauge(
    "event_collector_oldest_unindexed_age_seconds",
    "Age of the oldest event accepted and not yet indexed: the buffer's head, the batches being sent and the "
    "pending store's oldest row nobody holds; 0 when there is none. Measured every second, not per event",
    registry=REGISTRY, multiprocess_mode="livemax",
)
events_replayed = Counter(
    "event_collector_events_replayed_total", "Pending rows moved back into the buffer", registry=REGISTRY,
)
bulk_requests = Counter(
    "event_collector_bulk_requests_total",
    "_bulk requests, by result: ok (every event delivered), rejected (some dead-lettered, none to retry), "
    "failed (some kept for retry), unreachable (no answer), paused (a whole-request 401, 403, 404, 408, "
    "429 or 5xx), too_large (413)",
    ["result"], registry=REGISTRY,
)
bulk_duration = Histogram(
    "event_collector_bulk_request_duration_seconds", "Time of one _bulk request", registry=REGISTRY,
)
events_lost = Counter(
    "event_collector_events_lost_total",
    "Events answered 2xx that neither the store nor the buffer could keep (logged as CRITICAL)", registry=REGISTRY,
)
task_restarts = Counter(
    "event_collector_task_restarts_total", "Background tasks that raised and were started again, by task",
    ["task"], registry=REGISTRY,
)
delivery_pauses = Counter(
    "event_collector_delivery_pauses_total",
    "Bulk requests OpenSearch did not take (unreachable, overloaded, misconfigured): delivery paused",
    registry=REGISTRY,
)
delivery_paused = Gauge(
    "event_collector_delivery_paused", "1 while delivery is paused because OpenSearch does not take requests",
    registry=REGISTRY, multiprocess_mode="livemax",
)
buffer_events = Gauge("event_collector_buffer_events", "Events waiting in the in-memory buffer", registry=REGISTRY,
                      multiprocess_mode="livesum")
bulk_concurrency = Gauge(
    "event_collector_bulk_concurrency", "_bulk requests allowed in flight at once (BULK_ADAPTIVE_CONCURRENCY)",
    registry=REGISTRY, multiprocess_mode="livesum",
)


def observe_delivery_lag(received_ats: Iterable[float]) -> None:
    """One observation per delivered event, from one clock reading for the whole bulk response.

    Counted into the buckets here and added once per bucket: the same figures as one `observe` an event
    (tests/unit/test_delivery_lag.py holds them equal) at 0.15 µs an event instead of 3.6 µs (measured), since a
    bulk response settles up to BULK_SIZE events on the event loop. Reaches into the Histogram's parts, which
    the exact pin of prometheus-client holds still."""
    now = time.time()
    bounds = delivery_lag._upper_bounds  # ends with +Inf: every lag has a bucket
    counts = [0] * len(bounds)
    total = 0.0
    for received_at in received_ats:
        lag = now - received_at
        if lag < 0.0:  # another clock's received_at (a Kafka record's) a little ahead
            lag = 0.0
        counts[bisect_left(bounds, lag)] += 1
        total += lag
    delivery_lag._sum.inc(total)
    for bucket, count in zip(delivery_lag._buckets, counts):
        if count:
            bucket.inc(count)


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type, over every worker process when there are several."""
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if directory:
        _forget_dead_workers(directory)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# Receipts (POST /v1/receipts, api/receipts_route.py).
receipts_requests = Counter(
    "event_collector_receipts_requests_total",
    "Receipts requests, by outcome: answered, invalid (400), unauthorized (401), forbidden (403, origin), "
    "too_large (413), timeout (408), rate_limited (429), unavailable (503: OpenSearch or the store could not be asked)",
    ["outcome"], registry=REGISTRY,
)
receipts_answered = Counter(
    "event_collector_receipts_total", "Receipts answered (one per id asked), by state", ["state"], registry=REGISTRY,
)


# The pending store (pending/).
store_replaced = Counter(
    "event_collector_store_replaced_total",
    "Times the pending store's file was found deleted or replaced while in use; its rows were moved to the new one",
    registry=REGISTRY,
)
dead_letters_dropped = Counter(
    "event_collector_dead_letters_dropped_total", "Dead letters dropped, oldest first, to stay under "
    "DEAD_LETTER_MAX_BYTES", registry=REGISTRY,
)


def _forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of worker processes that died (a kill -9 the server respawned), so that they
    no longer count; their counters stay, since what they counted did happen."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)
        except PermissionError:
            pass


# The connection to OpenSearch (shipper/nodes.py).
opensearch_node_failures = Counter(
    "event_collector_opensearch_node_failures_total",
    "Requests a node did not answer (refused, reset, TLS failure or timeout), by node (its URL without user info); "
    "the node is set aside for a back-off and the request goes to another",
    ["node"], registry=REGISTRY,
)


# ACK_MODE=kafka (kafka/producer.py).
kafka_records_produced = Counter(
    "event_collector_kafka_records_produced_total", "Records the Kafka brokers acknowledged (ACK_MODE=kafka)",
    registry=REGISTRY,
)
kafka_records_failed = Counter(
    "event_collector_kafka_records_failed_total",
    "Records the Kafka brokers did not acknowledge within KAFKA_PRODUCE_TIMEOUT_SECONDS or refused; their "
    "requests were answered 503", registry=REGISTRY,
)


# Tracking plans (rules/, docs/rules.md).
rules_events = Counter(
    "event_collector_rules_events_total",
    "Events the rules did not keep as sent, by outcome (rejected, quarantined, tagged, dropped, sampled_out, "
    "bot_dropped, bot_flagged), source, event (a name from RULES_FILE, or \"(unplanned)\") and rule",
    ["outcome", "source", "event", "rule"], registry=REGISTRY,
)
rules_info = Gauge(
    "event_collector_rules_info", "1 for the RULES_FILE version in force (<label>-<12 hex of its sha256>)",
    ["version"], registry=REGISTRY, multiprocess_mode="livemax",
)
