import calendar

import msgspec

from event_collector.api.validation import decode_event
from event_collector.envelope import build_envelope, format_timestamp, index_name


def utc(text: str) -> float:
    return calendar.timegm(__import__("time").strptime(text, "%Y-%m-%dT%H:%M:%S"))


def test_index_month_is_taken_in_utc_plus_9_and_not_zero_padded():
    assert index_name("prod", utc("2026-03-15T00:00:00")) == "events_prod_2026-3"
    # 15:00 UTC on the last day of a month is already the next month in KST.
    assert index_name("prod", utc("2026-11-30T14:59:59")) == "events_prod_2026-11"
    assert index_name("prod", utc("2026-11-30T15:00:00")) == "events_prod_2026-12"
    assert index_name("prod", utc("2026-12-31T15:00:00")) == "events_prod_2027-1"


def test_timestamps_are_utc_with_milliseconds():
    assert format_timestamp(utc("2026-11-28T09:15:02") + 0.1234) == "2026-11-28T09:15:02.123Z"


def test_the_document_has_the_contract_shape():
    event = decode_event(b'{"log_id":"id1","page":"/p","event":"e","target":"t","param":{"a":1}}')
    headers = {"device-uuid": "d", "app-version": "1.0", "os-version": "17", "user-agent": None}
    received_at = utc("2026-11-28T09:15:02") + 0.5
    envelope = build_envelope("local", event, "user-9", headers, received_at)
    assert envelope.index == "events_local_2026-11"
    assert envelope.log_id == "id1"
    assert msgspec.json.decode(envelope.document) == {
        "log_id": "id1", "user_id": "user-9", "device_uuid": "d", "app_version": "1.0", "os_version": "17",
        "user_agent": None,
        "event_info": {"page": "/p", "event": "e", "label": None, "target": "t", "section": None,
                       "param": {"a": 1}},
        "received_at": "2026-11-28T09:15:02.500Z",
        "event_time": "2026-11-28T09:15:02.500Z", "event_time_clamped": False, "timestamp": None, "sent_at": None,
        "client_ip": None, "geo": None, "user_agent_info": None,
    }


def test_the_index_month_comes_from_the_device_timestamp_when_it_is_within_bounds():
    received_at = utc("2026-11-30T15:00:30")  # already December in UTC+9
    before_midnight = b'{"log_id":"a","page":"p","event":"e","timestamp":"2026-11-30T14:59:50Z"}'
    assert build_envelope("prod", decode_event(before_midnight), "u", {}, received_at).index == "events_prod_2026-11"
    # The same event resent six days later still goes to November's index.
    assert build_envelope("prod", decode_event(before_midnight), "u", {}, received_at + 6 * 86400).index \
        == "events_prod_2026-11"
    # Without a device time, the month of received_at.
    untimed = b'{"log_id":"a","page":"p","event":"e"}'
    assert build_envelope("prod", decode_event(untimed), "u", {}, received_at).index == "events_prod_2026-12"
    # A device time older than the bound names no index: received_at does.
    assert build_envelope("prod", decode_event(before_midnight), "u", {}, received_at + 8 * 86400).index \
        == "events_prod_2026-12"
