"""The retry policy, in one place: what pauses delivery, how long to wait, when to try again.

- An event's own failure (an item answered 429 or 5xx) counts an attempt; the pending store waits
  `backoff_seconds(attempts)` before the next one and gives up after MAX_DELIVERY_ATTEMPTS
  (`shipper/bulk.py` classifies each item; a 4xx that is the event's fault goes to dead-letter at once).
- A failure of the whole request that is not the events' fault (no answer, `pause_reason`) counts
  nothing: the `Breaker` pauses every sender and probes until OpenSearch answers again.
- A sender that cannot keep a batch anywhere (store failing) waits with a `Backoff` before the next one,
  so that nothing spins when nothing can progress.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Callable

from . import metrics

log = logging.getLogger(__name__)


def backoff_seconds(attempts: int, base_seconds: float, max_seconds: float) -> float:
    """The delay after `attempts` failures: doubling from `base_seconds`, capped at `max_seconds`, with
    jitter over the upper half so that the retries of one outage spread out."""
    ceiling = min(max_seconds, base_seconds * 2 ** min(attempts, 30))
    return ceiling * random.uniform(0.5, 1.0)


class Backoff:
    """Consecutive failures of one worker; `next_delay` grows with each, `reset` after a success."""

    def __init__(self, base_seconds: float, max_seconds: float) -> None:
        self.base_seconds = base_seconds
        self.max_seconds = max_seconds
        self.failures = 0

    def next_delay(self) -> float:
        delay = backoff_seconds(self.failures, self.base_seconds, self.max_seconds)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


# Whole-request answers that say nothing about the events: delivery pauses, no attempt is counted. Every
# 5xx is the server's or a proxy's trouble (501 from a proxy, 507 from a full disk), never the events'.
_UNAVAILABLE_STATUSES = frozenset({408, 429, *range(500, 600)})
# Whole-request answers that mean a setting is wrong; what to fix, for the log and /metrics.
MISCONFIGURED_STATUSES = {
    401: "OpenSearch refused the credentials (401): check OPEN_SEARCH_USERNAME and OPEN_SEARCH_PASSWORD (or the user "
         "info in OPEN_SEARCH_DNS), or the AWS credentials and AWS_REGION with OPEN_SEARCH_AUTH=sigv4",
    403: "OpenSearch forbids bulk writes to these indices (403): check the permissions of OPEN_SEARCH_USERNAME (or "
         "of the AWS identity with OPEN_SEARCH_AUTH=sigv4, and OPEN_SEARCH_AWS_SERVICE)",
    404: "OpenSearch has no _bulk endpoint at this address (404): check OPEN_SEARCH_DNS's host, port and path",
}


# A 4xx whose body is not JSON did not come from OpenSearch, which answers every error in JSON: something in
# front of it (a proxy wanting a client certificate, a gateway) refused the request before OpenSearch saw it.
_PROXY_REFUSAL = ("a proxy in front of OpenSearch refused the bulk request ({status}, not an OpenSearch answer): "
                  "check OPEN_SEARCH_CLIENT_CERT and OPEN_SEARCH_CLIENT_KEY if it asks for a client certificate, "
                  "and the proxy's rules")


def pause_reason(status: int, body: object = None) -> str | None:
    """Why a whole bulk answer with `status` pauses delivery, or None when its items decide.

    Outages and overload (408, 429, 5xx) and misconfiguration (401, 403, 404) are not the events' fault:
    they are held and sent again once OpenSearch takes requests, without burning their attempts. A 413
    is handled apart: the batch is split, since its size is what is refused.
    """
    if status in _UNAVAILABLE_STATUSES:
        return f"OpenSearch answered {status} to the whole bulk request"
    if status in MISCONFIGURED_STATUSES:
        return MISCONFIGURED_STATUSES[status]
    if 400 <= status < 500 and status != 413 and not isinstance(body, dict):
        return _PROXY_REFUSAL.format(status=status)
    return None


class Breaker:
    """Stops every sender while OpenSearch cannot take bulk requests, and lets one probe through at a time.

    Closed: requests go. After a failure it opens: senders hold their batches in memory (no store writes
    for events that merely wait) and one of them, the probe, tries again after a delay that doubles up to
    `max_seconds`. When a probe gets through, it closes and everyone goes at once; `recovered` wakes the
    replayer so the backlog drains at once rather than at its next interval.
    """

    def __init__(self, base_seconds: float = 1.0, max_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff = Backoff(base_seconds, max_seconds)
        self._clock = clock
        self._closed = asyncio.Event()
        self._closed.set()
        self.recovered = asyncio.Event()
        self._probing = False
        self._probe_at = 0.0
        self.reason: str | None = None

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    async def permit(self) -> None:
        """Return when a request may go: at once while closed; while open, to one probe at a time."""
        while not self._closed.is_set():
            wait_seconds = self._probe_at - self._clock()
            if not self._probing and wait_seconds <= 0:
                self._probing = True
                return
            try:
                await asyncio.wait_for(self._closed.wait(), None if self._probing else wait_seconds)
            except TimeoutError:
                pass

    def succeeded(self) -> None:
        self._probing = False
        self._backoff.reset()
        if self.is_open:
            log.warning("OpenSearch takes bulk requests again: delivery resumes (paused for: %s)", self.reason)
            self.reason = None
            self._closed.set()
            self.recovered.set()
            metrics.delivery_paused.set(0)

    def failed(self, reason: str) -> None:
        self._probing = False
        self._probe_at = self._clock() + self._backoff.next_delay()
        if not self.is_open:
            log.error("delivery paused, events are held until OpenSearch takes requests again: %s", reason)
            self._closed.clear()
            metrics.delivery_paused.set(1)
        self.reason = reason

    def abandoned(self) -> None:
        """The probe ended without an answer (its sender was stopped): let another one try."""
        self._probing = False

    async def wait_closed(self) -> None:
        await self._closed.wait()
