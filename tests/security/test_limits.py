"""What OpenSearch refuses for its shape is refused at the door, against a real collector and the real node.

Before, an event whose `param` had a key or value past Lucene's term limit (or a number past the JSON
parser's) was answered 200 and then refused by OpenSearch ("immense term"), to stay in the dead-letter
table for good. Each case is checked on both sides of the limit: one byte over is answered 400 naming
`param` (and OpenSearch, given the same document, does refuse it); at the limit the event is answered 200
and indexed, and nothing is dead-lettered.
"""

import time
import uuid

import msgspec
import pytest

from event_collector.api.validation import EventBody
from event_collector.envelope import build_envelope
from event_collector.shipper.template import index_template, template_name
from support import CollectorProcess, OpenSearch, event, unique_environment, wait_until

# (name, the longest `param` OpenSearch indexes, the same one byte longer): the key path is the keys down
# to the leaf joined with "."; with the value it may take 32,731 bytes of UTF-8.
CASES = [
    ("value", {"k": "v" * 32730}, {"k": "v" * 32731}),
    ("key", {"k" * 32730: "v"}, {"k" * 32731: "v"}),
    ("nested path", {"a": {"b": "v" * 32728}}, {"a": {"b": "v" * 32729}}),
    ("dotted key", {"a.b": "v" * 32728}, {"a.b": "v" * 32729}),
    ("object in an array", {"list": [1, {"j": "v" * 32725}]}, {"list": [1, {"j": "v" * 32726}]}),
    ("two long keys", {"k" * 16365: {"j" * 16364: "v"}}, {"k" * 16366: {"j" * 16364: "v"}}),
    ("multi-byte value", {"k": "\u20ac" * 10910}, {"k": "\u20ac" * 10910 + "v"}),
    ("boolean under a long key", {"k" * 32727: True}, {"k" * 32728: True}),
    ("long integer", {"n": int("9" * 1000)}, {"n": 10**1000}),
    # Keys that lead to no leaf are not indexed, so OpenSearch takes them at any length.
    ("key without a leaf", {"k" * 40000: None, "e": {"k" * 40000: {}}}, {"k" * 40000: None, "e": {"k" * 40000: 0}}),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, opensearch):
    collector = CollectorProcess(tmp_path_factory.mktemp("limits")).start()
    yield collector
    collector.stop()


@pytest.fixture(scope="module")
def scratch_index(opensearch: OpenSearch):
    """An index made from the collector's template, to give OpenSearch documents directly."""
    environment = unique_environment()
    opensearch.http.put(f"/_index_template/{template_name(environment)}",
                        json=index_template(environment)).raise_for_status()
    index = f"events_{environment}_scratch"
    opensearch.http.put(f"/{index}").raise_for_status()
    yield environment, index
    opensearch.http.delete(f"/{index}")
    opensearch.http.delete(f"/_index_template/{template_name(environment)}")


def opensearch_verdict(opensearch: OpenSearch, scratch_index, param: dict) -> tuple[int, str]:
    """The status (and error type) OpenSearch gives the document the collector would build for `param`."""
    environment, index = scratch_index
    body = EventBody(log_id=uuid.uuid4().hex, page="/p", event="e", param=param)
    envelope = build_envelope(environment, body, "user-1", {}, time.time())
    action = msgspec.json.encode({"create": {"_index": index, "_id": envelope.log_id}})
    response = opensearch.http.post("/_bulk", content=action + b"\n" + envelope.document + b"\n",
                                    headers={"content-type": "application/x-ndjson"})
    response.raise_for_status()
    [item] = response.json()["items"]
    return item["create"]["status"], (item["create"].get("error") or {}).get("type", "")


@pytest.mark.parametrize(("name", "longest", "too_long"), CASES, ids=[case[0] for case in CASES])
def test_one_byte_past_what_opensearch_indexes_is_refused_at_the_door_and_the_longest_is_indexed(
        served, opensearch, scratch_index, name, longest, too_long):
    response = served.post_event(event(f"too-long-{name}", param=too_long))
    assert response.status_code == 400, response.text[:300]
    assert response.json()["field"] == "param"
    assert response.json()["error"].startswith("param value at param.")
    status, error = opensearch_verdict(opensearch, scratch_index, too_long)
    assert status == 400, "OpenSearch takes this document: the collector refuses more than it must"
    assert error in ("illegal_argument_exception", "mapper_parsing_exception")

    response = served.post_event(event(f"longest-{name}", param=longest))
    assert response.status_code == 200, response.text[:300]
    wait_until(lambda: opensearch.search(served.environment, {"term": {"log_id": f"longest-{name}"}}), timeout=60,
               message="the longest event indexed")
    [hit] = opensearch.search(served.environment, {"term": {"log_id": f"longest-{name}"}})
    assert hit["_source"]["event_info"]["param"] == longest
    assert served.dead_letters() == []


def test_a_batch_refuses_only_the_event_past_the_limit(served, opensearch):
    batch = [event("batch-fits"), event("batch-too-long", param={"k": "v" * 32731}), event("batch-fits-too")]
    response = served.http.post("/events/batch", json=batch, headers=served.auth())
    answer = response.json()
    assert (response.status_code, answer["accepted"]) == (200, 2)
    [rejected] = answer["rejected"]
    assert (rejected["index"], rejected["status"], rejected["field"]) == (1, 400, "param")
    wait_until(lambda: {"batch-fits", "batch-fits-too"} <= set(opensearch.log_id_counts(served.environment)),
               timeout=60, message="the two events that fit indexed")
    assert served.dead_letters() == []


def test_a_deeply_nested_unknown_field_is_named_not_blamed_on_param(served):
    deep = b"[" * 3000 + b"]" * 3000
    body = msgspec.json.encode(event("deep-unknown", param={"ok": 1}))[:-1] + b',"junk":' + deep + b"}"
    response = served.http.post("/events", content=body, headers=served.auth())
    assert response.status_code == 400
    assert response.json()["field"] == "junk"
    assert "param" not in response.json()["error"]


def test_a_batch_element_too_deep_to_read_refuses_the_array_whole_but_not_an_ndjson_line(served, opensearch):
    deep = msgspec.json.encode(event("deep-element"))[:-1] + b',"junk":' + b"[" * 3000 + b"]" * 3000 + b"}"
    fine = msgspec.json.encode(event("deep-array-neighbour"))
    response = served.http.post("/events/batch", content=b"[" + fine + b"," + deep + b"]", headers=served.auth())
    # One JSON array is read in one go, so its elements cannot be told apart: refused whole, said so.
    assert response.status_code == 400
    assert "refused whole" in response.json()["error"]
    # NDJSON is read line by line: the deep line is refused on its own.
    fine_line = msgspec.json.encode(event("deep-ndjson-neighbour"))
    response = served.http.post("/events/batch", content=fine_line + b"\n" + deep,
                                headers={**served.auth(), "Content-Type": "application/x-ndjson"})
    answer = response.json()
    assert (response.status_code, answer["accepted"]) == (200, 1)
    assert [(r["index"], r["field"]) for r in answer["rejected"]] == [(1, "junk")]
    wait_until(lambda: "deep-ndjson-neighbour" in opensearch.log_id_counts(served.environment), timeout=60)
    assert "deep-array-neighbour" not in opensearch.log_id_counts(served.environment)
