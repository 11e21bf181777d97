"""The event's own time, from the device's clock: `timestamp` (when the event happened) and `sent_at` (when
the request left the device).

A device clock can be off by minutes or years. Its offset is the same in both fields, so
`received_at - (sent_at - timestamp)` removes it (what Segment and Snowplow do); the network's delay stays
in, which is small beside a wrong clock. An event time that is still implausible (more than a day ahead of
the collector, or older than the pending store keeps events) is replaced by `received_at` and flagged.

The index month is chosen from a time that is the same on every resend of one event, so that a resend finds
its first copy (docs/client-time.md): the device's `timestamp` itself when it lies within the same bounds,
else `received_at`. The corrected event time cannot serve: it moves with each resend's network delay.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Callable, NamedTuple

log = logging.getLogger(__name__)

# An event time further ahead of the collector's clock than this is a wrong clock, not an event.
MAX_FUTURE_SECONDS = 86400.0
_UTC = timedelta(0)

ClientTime = datetime | float  # an aware datetime (RFC 3339) or epoch milliseconds


class EventTime(NamedTuple):
    event_time: float
    clamped: bool
    # Epoch seconds the index month is taken from.
    index_time: float


def epoch_seconds(value: ClientTime) -> float:
    return value.timestamp() if type(value) is datetime else value / 1000.0


def event_time(timestamp: ClientTime | None, sent_at: ClientTime | None, received_at: float,
               max_age_seconds: float) -> EventTime:
    if timestamp is None:
        # `sent_at` alone says when the request left, not when the event happened: nothing to correct.
        return EventTime(received_at, False, received_at)
    happened = epoch_seconds(timestamp)
    oldest, latest = received_at - max_age_seconds, received_at + MAX_FUTURE_SECONDS
    index_time = happened if oldest <= happened <= latest else received_at
    corrected = happened if sent_at is None else received_at - (epoch_seconds(sent_at) - happened)
    if oldest <= corrected <= latest:
        return EventTime(corrected, False, index_time)
    return EventTime(received_at, True, index_time)


def written(value: ClientTime | None) -> str | None:
    """The device's time as the document keeps it: ISO 8601 with milliseconds (what a `date` field holds),
    in the offset the device wrote, `Z` for UTC and for epoch milliseconds. Finer digits are cut."""
    if value is None:
        return None
    if type(value) is not datetime:
        millis = int(value)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"
    text = value.isoformat(timespec="milliseconds")
    return text[:-6] + "Z" if value.utcoffset() == _UTC else text


def collector_clock(offset_seconds: float) -> Callable[[], float]:
    """The clock that stamps `received_at`. TEST_CLOCK_OFFSET_SECONDS shifts it, for tests only: a real
    collector and OpenSearch can then be shown an event resent across a month boundary."""
    if not offset_seconds:
        return time.time
    log.warning("TEST_CLOCK_OFFSET_SECONDS=%s: received_at is shifted; this setting is for tests only",
                offset_seconds)
    return lambda: time.time() + offset_seconds
