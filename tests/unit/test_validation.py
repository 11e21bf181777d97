import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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


# What OpenSearch refuses for its shape is refused here (see the module's docstring for each limit).

def with_param(param) -> bytes:
    return msgspec.json.encode({"log_id": "a", "page": "b", "event": "c", "param": param})


def refusal(param) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as raised:
        decode_event(with_param(param))
    assert raised.value.field == "param"
    assert raised.value.status == 400
    return raised.value


# Each pair: a longest leaf OpenSearch 2.19 takes, and one byte more (the rule was bisected against the real
# node; tests/security/test_limits.py checks such pairs there).
@pytest.mark.parametrize(
    ("longest", "one_too_long"),
    [
        ({"k": "v" * 32730}, {"k": "v" * 32731}),
        ({"k" * 32730: "v"}, {"k" * 32731: "v"}),
        ({"k" * 100: "v" * 32631}, {"k" * 100: "v" * 32632}),
        ({"": "v" * 32731}, {"": "v" * 32732}),
        ({"a": {"b": "v" * 32728}}, {"a": {"b": "v" * 32729}}),
        ({"a.b": "v" * 32728}, {"a.b": "v" * 32729}),
        ({"k": [{"j": "v" * 32728}]}, {"k": [{"j": "v" * 32729}]}),
        ({"k": ["x", ["v" * 32730]]}, {"k": ["x", ["v" * 32731]]}),
        ({"k": "\u20ac" * 10910}, {"k": "\u20ac" * 10910 + "v"}),
        ({"k" * 16365: {"j" * 16364: "v"}}, {"k" * 16366: {"j" * 16364: "v"}}),
        ({"k" * 32727: True}, {"k" * 32728: True}),
        ({"k" * 32726: 12345}, {"k" * 32727: 12345}),
    ],
)
def test_a_leaf_is_refused_when_its_key_path_and_value_pass_what_opensearch_indexes(longest, one_too_long):
    assert decode_event(with_param(longest)).param == longest
    error = refusal(one_too_long)
    assert "32732 bytes" in error.message and "more than the 32731" in error.message


def test_the_refusal_spells_out_the_key_path_with_long_keys_cut():
    error = refusal({"items": [{"ok": 1}, {"name": {"x" * 40000: "v"}}]})
    assert "param value at param.items[1].name." + "x" * 64 + "…(40000 characters) cannot be indexed" in error.message
    assert len(error.message) < 300


def test_a_long_key_is_bound_only_when_it_leads_to_a_leaf_since_only_leaves_are_indexed():
    param = {"k" * 40000: None, "e" * 40000: {}, "l" * 40000: [], "n": [None, {"x" * 40000: None}]}
    assert decode_event(with_param(param)).param == param
    assert "param.n[1]." + "x" * 64 in refusal({**param, "n": [None, {"x" * 40000: False}]}).message


@pytest.mark.parametrize(
    ("taken", "refused"),
    [(int("9" * 1000), 10**1000), (-int("9" * 1000), -(10**1000)), (1.7976931348623157e308, int("9" * 4300))],
)
def test_an_integer_of_more_than_1000_digits_is_refused(taken, refused):
    assert decode_event(with_param({"n": [1, taken]})).param == {"n": [1, taken]}
    error = refusal({"n": [1, refused]})
    assert "param value at param.n[1] is a number of more than 1000 digits" in error.message


def test_a_long_number_is_found_in_a_body_too_short_for_a_long_term():
    body = b'{"log_id":"a","page":"b","event":"c","param":{"n":1' + b"0" * 1000 + b"}}"
    assert len(body) < 32731
    with pytest.raises(InvalidEvent, match="more than 1000 digits"):
        decode_event(body)


@pytest.mark.parametrize("before", [b"", b'"x":"]]]}}}\\"[",'])
def test_a_deep_unknown_field_is_named_not_blamed_on_param(before):
    body = (b'{"log_id":"a","page":"b","event":"c",' + before + b'"param":{"ok":1},"junk":'
            + b"[" * 5000 + b"]" * 5000 + b"}")
    with pytest.raises(InvalidEvent) as raised:
        decode_event(body)
    assert raised.value.field == "junk"
    assert "junk is nested more than 500 levels deep" in raised.value.message
    assert "param" not in raised.value.message


@pytest.mark.parametrize("before", [b'"pad":"' + b"p" * 20000 + b'","junk":', b'"\xff\xfe":'])
def test_deep_nesting_past_the_scanned_start_of_the_body_or_under_a_name_not_utf8_names_no_field(before):
    body = b'{"log_id":"a","page":"b","event":"c",' + before + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(InvalidEvent) as raised:
        decode_event(body)
    assert raised.value.field is None
    assert raised.value.message == "body is nested too deeply to be read"


# The cheap tests that spare most bodies the walk must never spare one OpenSearch would refuse: checked
# against a model of what flat_object writes (FlatObjectFieldMapper in OpenSearch 2.19).

def opensearch_refuses(param: dict) -> bool:
    def leaves(node, path):
        if isinstance(node, dict):
            for key, child in node.items():
                yield from leaves(child, [*path, key])
        elif isinstance(node, list):
            for child in node:
                yield from leaves(child, path)
        elif node is not None:
            yield path, node

    for path, value in leaves(param, []):
        if type(value) is int and len(str(abs(value))) > 1000:
            return True
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        doc_value = "event_info.param." + ".".join(["event_info.param", *path]) + "=" + text
        if len(doc_value.encode()) > 32766:
            return True
    return False


_long_texts = st.builds(lambda char, count: char * count, st.sampled_from(["a", ".", "\u00e9", "\u20ac", "\U0001F600"]),
                        st.integers(0, 33_000))
_texts = st.one_of(st.text(max_size=5), _long_texts)
_leaves = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
                    st.integers(-(10**1001), 10**1001), _texts)
_params = st.dictionaries(_texts, st.recursive(
    _leaves, lambda children: st.lists(children, max_size=3) | st.dictionaries(_texts, children, max_size=3),
    max_leaves=6), max_size=4)


@settings(derandomize=True, database=None, max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_params)
def test_an_event_is_refused_exactly_when_opensearch_would_refuse_its_param(param):
    try:
        decode_event(with_param(param))
        refused = False
    except InvalidEvent as exc:
        assert exc.field == "param", exc.message
        refused = True
    assert refused == opensearch_refuses(param)
