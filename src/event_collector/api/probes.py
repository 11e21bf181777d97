"""What /livez and /readyz answer: whether this process lives, and whether it can keep new events now.

Ready means a 2xx is possible for a new event: start-up done, no stop under way, and the pending store
able to take it (under PENDING_MAX_BYTES, and its last write on the ingest path did not fail moments
ago). OpenSearch's state is reported but never makes the collector unready: keeping events through an
outage is what it is for, and a load balancer that pulled every replica out during one would drop the
events at the clients instead.

Each worker process answers for itself (with SERVER_WORKERS > 1 a probe reaches one of them).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..exceptions import StoreFull
from ..lifecycle import Collector

# How long a failed store write keeps the process unready. Past it the next requests try the store
# again, so that a store that recovered (space freed) is used again even when no traffic comes in while
# the load balancer holds this replica out.
STORE_FAILURE_HOLD_SECONDS = 5.0


def liveness() -> dict[str, Any]:
    """Answering at all proves the process and its event loop run; nothing else is checked, so that an
    orchestrator restarts only a process that is stuck, never one waiting out an outage."""
    return {"status": "alive", "pid": os.getpid()}


def readiness(collector: Collector) -> tuple[bool, dict[str, Any]]:
    """(ready, the report): the reasons it is not ready, and the state of the buffer and of OpenSearch."""
    reasons = []
    if not collector.started:
        reasons.append("starting: the pipeline is not running yet")
    if collector.stopping:
        reasons.append("shutting down")
    if collector.settings.ack_mode == "kafka":
        return _kafka_readiness(collector, reasons)
    buffer = collector.buffer
    try:
        collector.store.check_room()
    except StoreFull as exc:
        # Memory mode keeps events in the buffer first: only a full buffer needs the store.
        if collector.settings.ack_mode == "durable" or buffer.free_space <= 0:
            reasons.append(str(exc))
    reasons += _recent_failure(collector, "the pending store failed to take events")
    breaker = collector.breaker
    report = {
        "status": "unready" if reasons else "ready",
        "reasons": reasons,
        "pid": os.getpid(),
        "ack_mode": collector.settings.ack_mode,
        "buffer": {"events": len(buffer), "capacity": buffer.capacity},
        # "paused": the breaker is open (unreachable, overloaded or refusing the settings): events are
        # kept and sent once it takes requests again.
        "opensearch": ({"delivery": "paused", "reason": breaker.reason} if breaker.is_open
                       else {"delivery": "flowing"}),
    }
    return not reasons, report


def _recent_failure(collector: Any, what: str) -> list[str]:
    if collector.store_failure is not None:
        message, failed_at = collector.store_failure
        ago = time.monotonic() - failed_at
        if ago < STORE_FAILURE_HOLD_SECONDS:
            return [f"{what} {ago:.1f} s ago: {message}"]
    return []


def _kafka_readiness(collector: Any, reasons: list[str]) -> tuple[bool, dict[str, Any]]:
    """ACK_MODE=kafka (kafka/collector.py): ready when the brokers can be reached and acknowledged the
    last request; no store, buffer or OpenSearch in this process."""
    kafka_reasons, kafka = collector.readiness()
    reasons += kafka_reasons + _recent_failure(collector, "Kafka did not acknowledge events")
    report = {"status": "unready" if reasons else "ready", "reasons": reasons, "pid": os.getpid(),
              "ack_mode": "kafka", "kafka": kafka}
    return not reasons, report
