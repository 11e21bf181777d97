"""Per-user rate limit: a token bucket per token `sub`, refilled at RATE_LIMIT_PER_USER events a second.

One bucket per user, so a user over the limit is answered 429 while every other user goes on as before.
Buckets live in memory, per worker process: with SERVER_WORKERS processes behind one port a user may get
up to that many times the rate (docs/security.md). A bucket that has refilled holds no information, so
idle buckets are dropped once there are many, which bounds the memory any number of users can take.
"""

from __future__ import annotations

import math
import time
from typing import Callable

_PRUNE_ABOVE_USERS = 10_000


class UserRateLimiter:
    def __init__(self, events_per_second: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if events_per_second <= 0:
            raise ValueError("a rate limit needs a positive rate")
        self.events_per_second = events_per_second
        # The burst is what a user may send at once after being idle; at least one second's worth.
        self.burst = float(max(burst, math.ceil(events_per_second), 1))
        self._clock = clock
        # user -> (tokens left, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._prune_above = _PRUNE_ABOVE_USERS

    def take(self, user: str, wanted: int) -> int:
        """Take up to `wanted` events' worth from the user's bucket; returns how many may go through."""
        now = self._clock()
        tokens, counted_at = self._buckets.get(user, (self.burst, now))
        tokens = min(self.burst, tokens + (now - counted_at) * self.events_per_second)
        granted = min(wanted, int(tokens))
        if user not in self._buckets and len(self._buckets) >= self._prune_above:
            self._prune(now)
        self._buckets[user] = (tokens - granted, now)
        return granted

    def retry_after_seconds(self, user: str) -> int:
        """Whole seconds until the user's bucket holds one event again (what Retry-After says)."""
        tokens, counted_at = self._buckets.get(user, (self.burst, self._clock()))
        missing = 1 - tokens - (self._clock() - counted_at) * self.events_per_second
        return max(1, math.ceil(missing / self.events_per_second))

    def _prune(self, now: float) -> None:
        refill_seconds = self.burst / self.events_per_second
        self._buckets = {user: bucket for user, bucket in self._buckets.items()
                         if now - bucket[1] < refill_seconds}
        # Many users active at once: prune again only once their number has doubled, never per request.
        self._prune_above = max(_PRUNE_ABOVE_USERS, 2 * len(self._buckets))

    def __len__(self) -> int:
        return len(self._buckets)
