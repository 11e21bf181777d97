import calendar
import time
from datetime import datetime, timedelta, timezone

import pytest

from event_collector.api.validation import decode_event
from event_collector.enrich.client_time import MAX_FUTURE_SECONDS, event_time, written
from event_collector.exceptions import InvalidEvent

WEEK = 7 * 86400.0
RECEIVED = calendar.timegm(time.strptime("2026-11-28T09:00:00", "%Y-%m-%dT%H:%M:%S"))


def millis(seconds: float) -> float:
    return seconds * 1000


def test_without_device_times_the_event_time_is_received_at():
    assert event_time(None, None, RECEIVED, WEEK) == (RECEIVED, False, RECEIVED)
    # sent_at alone says nothing of when the event happened.
    assert event_time(None, millis(RECEIVED - 3600), RECEIVED, WEEK) == (RECEIVED, False, RECEIVED)


def test_the_device_clock_offset_is_removed():
    # The device clock is two hours behind; the event happened 10 minutes before the request was sent.
    timestamp, sent_at = millis(RECEIVED - 7200 - 600), millis(RECEIVED - 7200)
    corrected, clamped, index_time = event_time(timestamp, sent_at, RECEIVED, WEEK)
    assert (corrected, clamped) == (RECEIVED - 600, False)
    # The index month comes from the device's own timestamp, the same on every resend.
    assert index_time == RECEIVED - 7800


def test_a_timestamp_without_sent_at_is_taken_as_it_is():
    assert event_time(millis(RECEIVED - 60), None, RECEIVED, WEEK) == (RECEIVED - 60, False, RECEIVED - 60)


@pytest.mark.parametrize("offset", [MAX_FUTURE_SECONDS + 1, -WEEK - 1])
def test_an_implausible_event_time_is_clamped_to_received_at_and_flagged(offset):
    assert event_time(millis(RECEIVED + offset), None, RECEIVED, WEEK) == (RECEIVED, True, RECEIVED)


def test_bounds_are_inclusive():
    assert event_time(millis(RECEIVED + MAX_FUTURE_SECONDS), None, RECEIVED, WEEK).clamped is False
    assert event_time(millis(RECEIVED - WEEK), None, RECEIVED, WEEK).clamped is False


def test_a_corrected_time_out_of_bounds_is_clamped_but_the_timestamp_may_still_name_the_index():
    # sent_at says the event is three weeks old, though its timestamp alone looks recent.
    timestamp, sent_at = millis(RECEIVED - 60), millis(RECEIVED + 21 * 86400)
    assert event_time(timestamp, sent_at, RECEIVED, WEEK) == (RECEIVED, True, RECEIVED - 60)


def test_device_times_are_written_as_iso_8601_with_milliseconds_in_the_offset_sent():
    assert written(None) is None
    assert written(1795856102123.9) == "2026-11-28T08:55:02.123Z"
    assert written(0.0) == "1970-01-01T00:00:00.000Z"
    kst = timezone(timedelta(hours=9))
    assert written(datetime(2026, 11, 28, 18, 0, 1, 987654, tzinfo=kst)) == "2026-11-28T18:00:01.987+09:00"
    assert written(datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)) == "2026-11-28T09:00:00.000Z"


BODY = '{{"log_id":"a","page":"p","event":"e","{field}":{value}}}'


@pytest.mark.parametrize("field", ["timestamp", "sent_at"])
@pytest.mark.parametrize("value", ['"2026-11-28T09:00:00"', '"2026-11-28"', '"yesterday"', "-1", "1e20", "true",
                                   '"2026-11-28T23:59:60Z"', "{}"])
def test_invalid_device_times_are_refused_naming_the_field(field, value):
    with pytest.raises(InvalidEvent) as refused:
        decode_event(BODY.format(field=field, value=value).encode())
    assert refused.value.field == field
    assert "RFC 3339" in refused.value.message


@pytest.mark.parametrize("field", ["timestamp", "sent_at"])
@pytest.mark.parametrize("value", ['"2026-11-28T09:00:00+18:01"', '"2026-11-28T09:00:00-23:59"'])
def test_offsets_no_time_zone_has_are_refused(field, value):
    with pytest.raises(InvalidEvent) as refused:
        decode_event(BODY.format(field=field, value=value).encode())
    assert (refused.value.field, "18:00" in refused.value.message) == (field, True)


@pytest.mark.parametrize("value", ['"2026-11-28T09:00:00-18:00"', '"2026-11-28T09:00:00Z"', '"2026-11-28t09:00:00.5+09:00"', "1795856102123",
                                   "1795856102123.5", "null"])
def test_valid_device_times_are_taken(value):
    decode_event(BODY.format(field="timestamp", value=value).encode())
