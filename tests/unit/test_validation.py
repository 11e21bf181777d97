import pytest

from event_collector.api.validation import MAX_PARAM_DEPTH, decode_event
from event_collector.exceptions import InvalidEvent


def nested(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def test_a_valid_event_decodes_with_its_optional_fields():
    event = decode_event(b'{"log_id":"1","page":"/p","event":"e","label":"l","param":{"k":[1,{"x":null}]},"extra":1}')
    assert (event.log_id, event.page, event.event, event.label) == ("1", "/p", "e", "l")
    assert event.param == {"k": [1, {"x": None}]}
    assert event.target is None


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        (b"", "empty", None),
        (b"   ", "empty", None),
        (b"{not json", "not valid JSON", None),
        (b'{"log_id":"a","page":"b","event":"c"} trailing', "not valid JSON", None),
        (b'{"log_id":"\xff\xfe","page":"b","event":"c"}', "UTF-8", None),
        (b"[1,2]", "Expected `object`", None),
        (b'{"page":"b","event":"c"}', "missing required field", "log_id"),
        (b'{"log_id":"a","event":"c"}', "missing required field", "page"),
        (b'{"log_id":"a","page":"b"}', "missing required field", "event"),
        (b'{"log_id":7,"page":"b","event":"c"}', "Expected `str`", "log_id"),
        (b'{"log_id":"","page":"b","event":"c"}', "length >= 1", "log_id"),
        (b'{"log_id":"' + b"i" * 513 + b'","page":"b","event":"c"}', "longer than 512 bytes", "log_id"),
        ('{"log_id":"' + "\u00e9" * 300 + '","page":"b","event":"c"}', "longer than 512 bytes", "log_id"),
        (b'{"log_id":"a","page":"b","event":"c","label":5}', "Expected `str | null`", "label"),
        (b'{"log_id":"a","page":"b","event":"c","param":[1]}', "Expected `object | null`", "param"),
        (b'{"log_id":"a","page":"b","event":"c","param":"x"}', "Expected `object | null`", "param"),
        (b'{"log_id":"a","page":"' + b"p" * 1025 + b'","event":"c"}', "length <= 1024", "page"),
        (b'{"log_id":"a","page":"b","event":"c","section":"' + b"s" * 1025 + b'"}', "length <= 1024", "section"),
    ],
)
def test_bad_bodies_name_the_problem(body, message, field):
    with pytest.raises(InvalidEvent) as raised:
        decode_event(body.encode() if isinstance(body, str) else body)
    assert message in raised.value.message
    assert raised.value.field == field
    assert raised.value.status == 400


def test_a_log_id_of_512_bytes_is_the_most_opensearch_takes():
    assert len(decode_event(b'{"log_id":"' + b"i" * 512 + b'","page":"b","event":"c"}').log_id) == 512


def test_strings_inside_param_are_not_bound_by_the_field_limit():
    event = decode_event(b'{"log_id":"a","page":"b","event":"c","param":{"k":"' + b"v" * 5000 + b'"}}')
    assert len(event.param["k"]) == 5000


def test_param_may_nest_up_to_the_limit():
    body = '{"log_id":"a","page":"b","event":"c","param":' + nested(MAX_PARAM_DEPTH) + "}"
    assert decode_event(body.encode()).param is not None


@pytest.mark.parametrize("depth", [MAX_PARAM_DEPTH + 1, 5000, 200_000])
def test_param_nested_deeper_than_the_limit_is_refused(depth):
    body = '{"log_id":"a","page":"b","event":"c","param":' + nested(depth) + "}"
    with pytest.raises(InvalidEvent) as raised:
        decode_event(body.encode())
    assert raised.value.field == "param"
    assert "deeper than 20" in raised.value.message


def test_deep_arrays_inside_param_count_as_nesting():
    body = '{"log_id":"a","page":"b","event":"c","param":{"a":' + "[" * 25 + "]" * 25 + "}}"
    with pytest.raises(InvalidEvent):
        decode_event(body.encode())
