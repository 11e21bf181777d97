"""A steady pacer: sends start at a fixed rate instead of as fast as answers come back.

A closed loop (send, wait for the answer, send the next) slows down exactly when the collector does, so a
drill would send least while the deployment is hurt. The pacer keeps the schedule open: event n is due n/rate
seconds after the first.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

# How far behind schedule the pacer may fall before it moves the schedule instead of catching up: a stall
# (a full set of requests in flight, a paused process) is not made up with a burst, which would be a
# load the operator did not ask for.
MAX_LAG_SECONDS = 0.1


class Pacer:
    def __init__(self, rate_per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_second <= 0:
            raise ValueError("the rate must be positive")
        self.rate_per_second = rate_per_second
        self.clock = clock
        self._start: float | None = None
        self._count = 0

    def next_due(self) -> float:
        """The clock time the next send is due, advancing the schedule by one."""
        now = self.clock()
        if self._start is None:
            self._start = now
        due = self._start + self._count / self.rate_per_second
        if now - due > MAX_LAG_SECONDS:
            self._start = now - self._count / self.rate_per_second
            due = now
        self._count += 1
        return due

    async def wait(self) -> None:
        """Return when the next send is due."""
        delay = self.next_due() - self.clock()
        if delay > 0:
            await asyncio.sleep(delay)
