"""How long to wait before trying again: exponential backoff with jitter, in one place.

The pending store uses `backoff_seconds` for an event's next attempt; a shipper uses a `Backoff` between
batches while OpenSearch or the store keeps failing, so that nothing spins when nothing can progress.
"""

from __future__ import annotations

import random


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
