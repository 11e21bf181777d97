"""POST /events/batch against a real collector and the real OpenSearch node."""

import gzip

import msgspec
import pytest

from support import event, wait_until


@pytest.fixture
def batch_collector(collector_factory):
    return collector_factory(BATCH_MAX_EVENTS=500)


def post_batch(collector, body: bytes, **headers: str):
    return collector.http.post("/events/batch", content=body, headers={**collector.auth("batcher"), **headers})


def assert_indexed_once(opensearch, collector, log_ids: set[str]) -> None:
    wait_until(lambda: opensearch.count(collector.environment) >= len(log_ids), message=f"{len(log_ids)} indexed")
    counts = opensearch.log_id_counts(collector.environment)
    assert set(counts) == log_ids
    assert set(counts.values()) == {1}


def test_a_json_array_is_accepted_whole_and_indexed(batch_collector, opensearch):
    events = [event() for _ in range(300)]
    response = post_batch(batch_collector, msgspec.json.encode(events), **{"device-uuid": "dev-7"})
    assert response.status_code == 200
    assert response.json() == {"status": "created", "accepted": 300, "rejected": []}
    assert_indexed_once(opensearch, batch_collector, {e["log_id"] for e in events})
    [hit] = opensearch.search(batch_collector.environment, {"term": {"log_id": events[0]["log_id"]}})
    assert (hit["_source"]["user_id"], hit["_source"]["device_uuid"]) == ("batcher", "dev-7")


def test_ndjson_gzip_with_partial_rejection_lists_the_rejected_by_position(batch_collector, opensearch):
    good = [event() for _ in range(5)]
    lines = [msgspec.json.encode(e) for e in good[:2]]
    lines += [b'{"log_id": "x", "page": 5, "event": "e"}', b"{broken"]
    lines += [msgspec.json.encode(e) for e in good[2:]]
    lines += [b'{"log_id": "y", "event": "e"}', b""]
    body = gzip.compress(b"\n".join(lines))
    response = post_batch(batch_collector, body, **{"Content-Type": "application/x-ndjson",
                                                    "Content-Encoding": "gzip"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 5
    assert [(r["index"], r.get("field")) for r in answer["rejected"]] == [(2, "page"), (3, None), (7, "page")]
    assert "not valid JSON" in answer["rejected"][1]["error"]
    assert_indexed_once(opensearch, batch_collector, {e["log_id"] for e in good})


def test_a_gzip_bomb_gets_413_without_being_inflated(batch_collector):
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < 1024 * 1024
    response = post_batch(batch_collector, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "once decompressed" in response.json()["error"]
    assert batch_collector.http.get("/ping").text == "pong"


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"[not json", {}, 400, "not a valid JSON array"),
        (b'{"log_id": "a", "page": "p", "event": "e"}', {}, 400, "must be a JSON array"),
        (b"", {}, 400, "empty"),
        (b"\n\n", {"Content-Type": "application/x-ndjson"}, 400, "empty"),
        (b"not gzip at all", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (gzip.compress(b"[]")[:-6], {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (b"[]", {"Content-Encoding": "br"}, 415, "unsupported Content-Encoding"),
        (gzip.compress(b"[]") + gzip.compress(b"[]"), {"Content-Encoding": "gzip"}, 400, "one gzip member"),
        (msgspec.json.encode([event() for _ in range(501)]), {}, 413, "BATCH_MAX_EVENTS"),
    ],
)
def test_unusable_batches_are_refused_with_the_reason(batch_collector, body, headers, status, message):
    response = post_batch(batch_collector, body, **headers)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_a_batch_of_only_invalid_events_is_answered_with_every_rejection(batch_collector):
    response = post_batch(batch_collector, b'[{"page": "p"}, 7, "x"]')
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 0
    assert [r["index"] for r in answer["rejected"]] == [0, 1, 2]


def test_batch_needs_the_same_auth(batch_collector):
    response = batch_collector.http.post("/events/batch", content=b"[]")
    assert response.status_code == 401
