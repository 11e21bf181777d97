"""Logging that stays readable when the same thing goes wrong thousands of times a minute, and that never
holds a token.

`RepeatFilter` lets the first record of a kind through (a kind is the logger, level and message template,
whatever its arguments), then drops the same kind for `interval_seconds`; the next one that passes says
how many were dropped. CRITICAL records always pass: they mean events were lost.
"""

from __future__ import annotations

import logging
import time
from typing import Callable


class RepeatFilter(logging.Filter):
    def __init__(self, interval_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_seconds = interval_seconds
        self._clock = clock
        # kind -> (when it was last let through, how many were dropped since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        passed_at, dropped = self._seen.get(kind, (None, 0))
        if passed_at is not None and now - passed_at < self.interval_seconds:
            self._seen[kind] = (passed_at, dropped + 1)
            return False
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this in the last {now - passed_at:.0f} s]"
        if len(self._seen) > 1000:  # templates are few; this only guards against unbounded growth
            self._seen.clear()
        self._seen[kind] = (now, 0)
        return True


class QueryRedactingFilter(logging.Filter):
    """Replaces the query string of every path in a record's arguments (uvicorn's access log line) by
    `?[redacted]`: `POST /events/beacon?token=…` carries a token, and the collector's routes read no other
    query parameter, so the whole query goes (a decoder-dependent spelling like `%74oken=` cannot slip by)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_is_path_with_query(arg) for arg in record.args):
            record.args = tuple(_redacted(arg) if _is_path_with_query(arg) else arg for arg in record.args)
        return True


def _is_path_with_query(value: object) -> bool:
    # Not only "/…": uvicorn logs the root path, and a client may send any request target.
    return isinstance(value, str) and "?" in value


def _redacted(path: str) -> str:
    return path.partition("?")[0] + "?[redacted]"
