"""Decoding the tracking API's messages (api/tracking.py): Segment's rules, the SDKs' quirks, OpenSearch's limits."""

import json

import pytest

from event_collector.api.tracking import MAX_MESSAGE_BYTES, decode_many, decode_one
from event_collector.exceptions import BodyTooLarge, InvalidEvent


def body(**fields) -> bytes:
    return json.dumps({"userId": "u1", **fields}).encode()


def test_the_route_names_the_type_and_ids_may_be_numbers_or_empty_as_sdks_send_them():
    [message] = decode_one(body(event="Signed Up", userId=42, anonymousId=""), "track").events
    assert (message.type, message.userId, message.anonymousId) == ("track", "42", None)


@pytest.mark.parametrize("fields, kind, field", [
    ({"userId": None}, "track", "userId"),
    ({"event": ""}, "track", "event"),
    ({}, "group", "groupId"),
    ({}, "alias", "previousId"),
    ({"properties": {"a": {"b": 1}}, "event": "x", "timestamp": "2026-12-04 06:40"}, "track", "timestamp"),
    ({"event": "x", "messageId": "é" * 300}, "track", "messageId"),
    ({"event": "x", "traits": [1, 2]}, "track", "traits"),
])
def test_a_message_segment_or_opensearch_would_refuse_is_400_naming_the_field(fields, kind, field):
    with pytest.raises(InvalidEvent) as refused:
        decode_one(body(**fields), kind)
    assert refused.value.field == field


def test_a_message_over_32_kb_is_413():
    with pytest.raises(BodyTooLarge):
        decode_one(body(event="x", properties={"blob": "x" * MAX_MESSAGE_BYTES}), "track")


def test_a_batch_keeps_what_is_valid_and_falls_back_to_its_wrapper():
    wrapper = {"writeKey": "wk", "sentAt": "2026-12-04T06:40:38Z", "context": {"library": {"name": "x"}}, "batch": [
        {"type": "track", "userId": "u", "event": "e"},
        {"type": "purchase", "userId": "u"},
        {"type": "page", "anonymousId": "a", "name": "Home", "context": {"ip": "198.51.100.7"}},
        "not an object",
    ]}
    tracked = decode_many(json.dumps(wrapper).encode())
    assert [m.type for m in tracked.events] == ["track", "page"] and tracked.positions == [0, 2]
    assert [(r.index, r.field) for r in tracked.rejected] == [(1, "type"), (3, None)]
    assert tracked.write_key == "wk" and tracked.sent_at is not None
    assert tracked.events[0].context == {"library": {"name": "x"}}  # the wrapper's, when it has none
    assert tracked.events[1].context == {"ip": "198.51.100.7"}  # its own otherwise


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"batch": 3}', b"{not json"])
def test_a_batch_that_cannot_be_read_is_400(raw):
    with pytest.raises(InvalidEvent):
        decode_many(raw)
