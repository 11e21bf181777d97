"""A receipts request's body (api/receipts_route.decode_ids) and who may read a receipt (receipts.Caller)."""

import json

import pytest

from event_collector.api.receipts_route import MAX_RECEIPT_IDS, decode_ids
from event_collector.envelope import DocumentOwner, document_owner
from event_collector.exceptions import InvalidEvent
from event_collector.receipts import Caller


def test_ids_are_read_in_order():
    assert decode_ids(b'{"ids": ["b", "a", "\\u00e9"], "other": {"ignored": [1]}}') == ["b", "a", "\u00e9"]
    assert len(decode_ids(json.dumps({"ids": [str(n) for n in range(MAX_RECEIPT_IDS)]}).encode())) == MAX_RECEIPT_IDS
    assert decode_ids(json.dumps({"ids": ["\u00e9" * 256]}).encode()) == ["\u00e9" * 256]  # 512 bytes: the limit


@pytest.mark.parametrize("body, message", [
    (b"", "malformed JSON"), (b"not json", "malformed JSON"), (b'{"ids": [1]}', "Expected `str`"),
    (b'{"ids": "a"}', "Expected `array`"), (b"{}", "missing required field `ids`"), (b'{"ids": []}', "empty"),
    (json.dumps({"ids": [str(n) for n in range(MAX_RECEIPT_IDS + 1)]}).encode(), "at most 1000"),
    (b'{"ids": ["a", "b", "a"]}', "distinct"), (b'{"ids": [""]}', "ids[0] is not an event id"),
    (json.dumps({"ids": ["ok", "\u00e9" * 257]}).encode(), "ids[1] is not an event id"),
    (b'{"ids": ["\xc3"]}', "UTF-8"), (b'{"ids": ' + b"[" * 5000 + b"]" * 5000 + b"}", ""),
])
def test_anything_else_is_refused_saying_what_is_wrong(body, message):
    with pytest.raises(InvalidEvent) as refused:
        decode_ids(body)
    assert refused.value.status == 400 and message in refused.value.message


def test_a_user_owns_the_jwt_apis_documents_of_its_sub_and_a_source_its_own():
    user, source = Caller(user_id="u1"), Caller(source="web", index_prefix="events_web")
    jwt_document = document_owner(b'{"log_id": "a", "user_id": "u1", "event_info": {"page": "/"}}')
    tracked_document = document_owner(b'{"log_id": "b", "user_id": "u1", "source": "web"}')
    assert user.owns(jwt_document) and not user.owns(tracked_document)  # same user_id, came by a source
    assert source.owns(tracked_document) and not source.owns(jwt_document)
    assert not Caller(source="ios").owns(tracked_document) and not Caller(user_id="u2").owns(jwt_document)
    assert user.key != Caller(source="u1").key  # a user and a source of the same name never share a rate


def test_an_unreadable_or_missing_document_belongs_to_nobody():
    for document in (None, b"", b"{not json", b'{"user_id": 5}'):
        owner = document_owner(document)
        assert owner == DocumentOwner() and not Caller(user_id="u1").owns(owner)
