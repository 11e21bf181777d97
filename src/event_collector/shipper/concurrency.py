"""How many bulk requests may be in flight at once: additive increase, multiplicative decrease on latency.

The same idea as Vector's adaptive request concurrency, kept small. The limit starts at 1 and never leaves
[1, BULK_WORKERS]. Decisions are taken once per window, a window lasting about one usual round trip, from
the requests that ended in it:

- OpenSearch pushed back (a whole request answered 429/5xx or unreachable, items answered 429 or
  rejected_execution) or the window's mean latency rose clearly above the usual one: the limit is
  multiplied by DECREASE_RATIO. More requests would only queue in OpenSearch's write pool, taking memory
  there and here and adding latency for nothing.
- otherwise, when the limit was used to the full during the window and latency stayed at its usual level:
  one more request may go. A limit that is not used never grows, so a quiet pipeline keeps a low one.

Only requests that were answered count: the breaker deals with outages (retry.Breaker), and a paused
request's duration says nothing about OpenSearch's load.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from .. import metrics

# Vector's defaults: a past RTT weighted 0.4 per window, and a cut of 10% per decrease.
EWMA_ALPHA = 0.4
DECREASE_RATIO = 0.9
# A window whose mean latency is this much above the usual one counts as OpenSearch slowing down. Latency
# of bulks on a shared machine varies by tens of percent for no reason of ours; only a clear rise counts.
LATENCY_RISE = 1.5


class AdaptiveConcurrency:
    def __init__(self, maximum: int, *, adaptive: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = max(1, maximum)
        self.adaptive = adaptive
        # Fixed: every sender may send at once (the behaviour before this controller).
        self.limit = 1 if adaptive else self.maximum
        metrics.bulk_concurrency.set(self.limit)
        self._clock = clock
        self._usual_latency: float | None = None
        self._window_ends = 0.0
        self._window_latencies: list[float] = []
        self._window_pushback = False
        self._window_full = False

    def bound(self, maximum: int) -> None:
        """Never more than `maximum` in flight (the senders there are)."""
        self.maximum = max(1, min(self.maximum, maximum))
        self.limit = min(self.limit, self.maximum)
        metrics.bulk_concurrency.set(self.limit)

    def started(self, in_flight: int) -> None:
        """A request is about to go with `in_flight` requests out, itself included."""
        if in_flight >= self.limit:
            self._window_full = True

    def observe(self, latency_seconds: float | None, pushback: bool) -> None:
        """A request ended: answered in `latency_seconds` (None: not answered), `pushback` when OpenSearch
        said it is overloaded."""
        if not self.adaptive:
            return
        if latency_seconds is not None:
            self._window_latencies.append(latency_seconds)
        self._window_pushback |= pushback
        now = self._clock()
        if now < self._window_ends and not pushback:
            return
        self._decide()
        self._window_ends = now + (self._usual_latency or 0.0)

    def _decide(self) -> None:
        latencies, self._window_latencies = self._window_latencies, []
        pushback, self._window_pushback = self._window_pushback, False
        full, self._window_full = self._window_full, False
        mean = sum(latencies) / len(latencies) if latencies else None
        usual = self._usual_latency
        if pushback or (mean is not None and usual is not None and mean > usual * LATENCY_RISE):
            self.limit = max(1, math.floor(self.limit * DECREASE_RATIO))
        elif full and mean is not None:
            self.limit = min(self.maximum, self.limit + 1)
        metrics.bulk_concurrency.set(self.limit)
        if mean is not None:
            self._usual_latency = mean if usual is None else usual + EWMA_ALPHA * (mean - usual)
