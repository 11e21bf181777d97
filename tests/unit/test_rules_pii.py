"""PII rules (rules/pii.py through SourceTransforms.scrub): what each action writes, where a path reaches, and
that the properties given are never changed."""

from __future__ import annotations

import copy
import hashlib
import hmac

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from event_collector.rules.pii import MAX_ELEMENTWISE
from event_collector.rules.transforms import SourceTransforms

KEY = b"test-hash-key"


def scrubbed(pii: dict, properties: dict, key: bytes = KEY) -> dict:
    before = copy.deepcopy(properties)
    result = SourceTransforms.compile("events", {"pii": pii}, key).scrub(properties)
    assert properties == before, "scrub changed its input"
    return result


def hashed(data: bytes, key: bytes = KEY) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


# --- hash ---

def test_hash_is_the_keyed_hmac_sha256_hex_of_the_string():
    result = scrubbed({"email": "hash"}, {"email": "ana@example.com", "plan": "pro"})
    assert result == {"email": hashed(b"ana@example.com"), "plan": "pro"}
    assert len(result["email"]) == 64 and "ana@example.com" not in result["email"]


@pytest.mark.parametrize("key", [b"k", b"k" * 63, b"k" * 64, b"k" * 65, bytes(range(256)) * 2])
def test_hash_is_hmac_sha256_whatever_the_key_length(key):
    """pii.py computes HMAC from its padded key states; keys longer than SHA-256's block are hashed first."""
    assert scrubbed({"email": "hash"}, {"email": "ana@example.com"}, key=key)["email"] == hashed(b"ana@example.com", key)


def test_equal_values_hash_alike_and_the_key_matters():
    first = scrubbed({"email": "hash"}, {"email": "ana@example.com"})["email"]
    assert scrubbed({"email": "hash"}, {"email": "ana@example.com"})["email"] == first
    assert scrubbed({"email": "hash"}, {"email": "bob@example.com"})["email"] != first
    assert scrubbed({"email": "hash"}, {"email": "ana@example.com"}, key=b"other-key")["email"] != first
    # Not the bare digest: without the key a guessed e-mail cannot be checked.
    assert first != hashlib.sha256(b"ana@example.com").hexdigest()


def test_other_values_hash_from_their_sorted_compact_json():
    result = scrubbed({"id": "hash", "flag": "hash", "doc": "hash", "other": "hash"},
                      {"id": 5, "flag": True, "doc": {"b": 2, "a": 1}, "other": {"a": 1, "b": 2}})
    assert result["id"] == hashed(b"5") == scrubbed({"id": "hash"}, {"id": "5"})["id"]
    assert result["flag"] == hashed(b"true")
    assert result["doc"] == result["other"] == hashed(b'{"a":1,"b":2}')


def test_hash_applies_to_each_element_of_a_list_and_keeps_null():
    result = scrubbed({"emails": "hash", "phone": "hash"}, {"emails": ["a@x.io", 7, None], "phone": None})
    assert result == {"emails": [hashed(b"a@x.io"), hashed(b"7"), None], "phone": None}


def test_a_list_is_hashed_element_by_element_one_level_deep_up_to_its_bound():
    nested = scrubbed({"ids": "hash"}, {"ids": [["a", "b"], "c"]})["ids"]
    assert nested == [hashed(b'["a","b"]'), hashed(b"c")]
    at_bound = [f"id-{n}" for n in range(MAX_ELEMENTWISE)]
    assert scrubbed({"ids": "hash"}, {"ids": at_bound})["ids"] == [hashed(item.encode()) for item in at_bound]


def test_a_hostile_list_costs_one_hash_not_one_per_element():
    """32,000 numbers fit a 64 KB body: hashed one by one they cost ~30 ms of CPU per event."""
    hostile = list(range(32_000))
    assert scrubbed({"ids": "hash"}, {"ids": hostile}) == {"ids": hashed(msgspec.json.encode(hostile))}
    assert scrubbed({"ids": "mask"}, {"ids": hostile + ["x" * 20]}) == {"ids": "****"}


def test_a_lone_surrogate_is_hashed_not_refused():
    assert scrubbed({"name": "hash"}, {"name": "\ud800x"})["name"] == hashed("\ud800x".encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(value=st.text(min_size=4, alphabet=st.characters(codec="utf-8")))
def test_a_hashed_value_never_shows_in_clear(value):
    result = scrubbed({"secret": "hash"}, {"secret": value})["secret"]
    assert value not in result
    assert result == hashed(value.encode())


# --- mask ---

@pytest.mark.parametrize("value, masked", [
    ("+33612345678", "********5678"),
    ("4111111111111111", "************1111"),
    ("123456789", "*****6789"),
    ("12345678", "********"),
    ("abc", "***"),
    ("", ""),
    (42, "****"),
    (3.5, "****"),
    (False, "****"),
    ({"street": "1 Main St"}, "****"),
    (None, None),
    (["+33612345678", 7, None, ["+33612345678"]], ["********5678", "****", None, "****"]),
])
def test_mask_keeps_the_last_four_of_a_long_string_only(value, masked):
    assert scrubbed({"phone": "mask"}, {"phone": value}) == {"phone": masked}


# --- drop, and where a path reaches ---

def test_drop_removes_the_key_at_the_end_of_a_nested_path():
    properties = {"address": {"street": "1 Main St", "city": "Lyon"}, "price": 3}
    assert scrubbed({"address.street": "drop"}, properties) == {"address": {"city": "Lyon"}, "price": 3}


def test_a_missing_path_or_one_through_a_non_object_changes_nothing():
    properties = {"address": "Lyon", "list": [1, 2], "none": None}
    result = scrubbed({"email": "drop", "address.street": "hash", "list.x": "mask", "none.x": "drop",
                       "a.b.c.d": "hash"}, properties)
    assert result is properties


def test_a_key_holding_the_dots_itself_is_reached_too():
    properties = {"address.street": "1 Main St", "user": {"contact.email": "a@x.io"}, "keep": 1}
    result = scrubbed({"address.street": "drop", "user.contact.email": "mask"}, properties)
    assert result == {"user": {"contact.email": "******"}, "keep": 1}


def test_a_list_on_the_way_applies_the_rest_to_each_object():
    properties = {"items": [{"sku": "A1", "email": "a@x.io"}, "loose", [{"email": "b@x.io"}], {"sku": "B2"}]}
    result = scrubbed({"items.email": "hash"}, properties)
    assert result == {"items": [{"sku": "A1", "email": hashed(b"a@x.io")}, "loose",
                                [{"email": hashed(b"b@x.io")}], {"sku": "B2"}]}


def test_rules_apply_deepest_first_whatever_their_order_in_the_file():
    properties = {"address": {"street": "1 Main St", "city": "Lyon"}}
    expected = hashed(b'{"city":"Lyon"}')
    assert scrubbed({"address": "hash", "address.street": "drop"}, properties) == {"address": expected}
    assert scrubbed({"address.street": "drop", "address": "hash"}, properties) == {"address": expected}


def test_only_the_objects_on_the_way_are_copied():
    untouched = {"deep": {"deeper": [1, 2, 3]}}
    properties = {"user": {"email": "a@x.io", "prefs": {"lang": "fr"}}, "other": untouched}
    result = scrubbed({"user.email": "drop"}, properties)
    assert result == {"user": {"prefs": {"lang": "fr"}}, "other": untouched}
    assert result["other"] is untouched and result["user"]["prefs"] is properties["user"]["prefs"]
    assert result is not properties and result["user"] is not properties["user"]


def test_a_realistic_event_with_every_action():
    properties = {"email": "ana@example.com", "phone": "+33612345678", "address": {"street": "1 Main St", "zip": "69001"},
                  "price": 12.5, "currency": "EUR"}
    result = scrubbed({"email": "hash", "address.street": "drop", "phone": "mask"}, properties)
    assert result == {"email": hashed(b"ana@example.com"), "phone": "********5678", "address": {"zip": "69001"},
                      "price": 12.5, "currency": "EUR"}
    assert "ana@example.com" not in repr(result) and "1 Main St" not in repr(result)


# --- any properties: never changed, and drop and mask leave nothing more to do ---

_KEYS = st.sampled_from(["a", "b", "a.b", "email"])
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
                     max_leaves=30)
_PATHS = st.sampled_from(["a", "b", "a.b", "a.b.email", "email", "b.a"])


@settings(max_examples=300, deadline=None)
@given(properties=st.dictionaries(_KEYS, _JSON, max_size=5),
       rules=st.dictionaries(_PATHS, st.sampled_from(["mask", "drop", "hash"]), min_size=1, max_size=4))
def test_any_properties_are_never_changed_and_drop_and_mask_are_idempotent(properties, rules):
    result = scrubbed(rules, properties)
    if "hash" not in rules.values():
        assert scrubbed(rules, result) == result
    if rules.get("email") == "drop":
        assert "email" not in result


def test_the_deepest_properties_the_door_lets_in_are_scrubbed():
    """api/validation.py's MAX_PARAM_DEPTH (20) bounds the nesting before the rules run; pii.py recurses."""
    nested: object = [{"email": "ana@example.com"}]
    for _ in range(18):
        nested = [nested]
    result = scrubbed({"items.email": "mask", "raw": "hash"}, {"items": nested, "raw": nested})
    inner = result["items"]
    for _ in range(18):
        inner = inner[0]
    assert inner == [{"email": "*" * 11 + ".com"}]
    assert "ana@example.com" not in repr(result["raw"])
