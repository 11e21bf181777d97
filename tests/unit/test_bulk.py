import msgspec

from event_collector.envelope import Envelope
from event_collector.shipper.bulk import bulk_body, classify


def envelopes(n: int) -> list[Envelope]:
    return [Envelope(f"idx-{i}", f"id-{i}", b'{"n":%d}' % i, 0.0) for i in range(n)]


def item(status: int, error_type: str | None = None) -> dict:
    result = {"status": status}
    if error_type:
        result["error"] = {"type": error_type, "reason": f"because {error_type}"}
    return {"create": result}


def test_bulk_body_is_create_actions_with_log_id_as_document_id():
    lines = bulk_body(envelopes(2)).split(b"\n")
    assert lines[-1] == b""
    assert msgspec.json.decode(lines[0]) == {"create": {"_index": "idx-0", "_id": "id-0"}}
    assert lines[1] == b'{"n":0}'
    assert msgspec.json.decode(lines[2]) == {"create": {"_index": "idx-1", "_id": "id-1"}}


def test_each_item_gets_its_own_outcome():
    batch = envelopes(6)
    body = {"errors": True, "items": [
        item(201), item(409, "version_conflict_engine_exception"), item(429, "rejected_execution_exception"),
        item(503, "unavailable_shards_exception"), item(400, "mapper_parsing_exception"),
        item(403, "cluster_block_exception"),
    ]}
    outcome = classify(batch, 200, body)
    assert outcome.delivered == batch[0:2]
    assert [f.envelope for f in outcome.retry] == [batch[2], batch[3], batch[5]]
    assert [f.envelope for f in outcome.rejected] == [batch[4]]
    assert "mapper_parsing_exception" in outcome.rejected[0].reason
    assert "because mapper_parsing_exception" in outcome.rejected[0].reason


def test_a_failed_request_retries_every_event():
    batch = envelopes(3)
    for status, body in [(429, {"error": "too many"}), (502, "bad gateway"), (200, {"items": []})]:
        outcome = classify(batch, status, body)
        assert [f.envelope for f in outcome.retry] == batch
        assert not outcome.delivered and not outcome.rejected


def test_action_lines_are_the_bytes_msgspec_writes_for_the_action_whatever_the_id():
    odd = ['quote " and backslash \\', "control \x00\x1f\n", "é and 日本 and \u2028", "emoji 🎉", ""]
    batch = [Envelope("events_test_2026-12" if i % 2 else "quarantine_events_test_2026-12", log_id, b"{}", 0.0)
             for i, log_id in enumerate(odd)]
    lines = bulk_body(batch).split(b"\n")
    for envelope, line in zip(batch, lines[0::2]):
        assert line == msgspec.json.encode({"create": {"_index": envelope.index, "_id": envelope.log_id}})


def test_an_answer_without_errors_delivers_every_event_without_reading_the_items():
    batch = envelopes(3)
    # Items OpenSearch would never send with errors false: they show the items were not read.
    body = {"errors": False, "items": [item(400, "mapper_parsing_exception")] * 3}
    assert classify(batch, 200, body).delivered == batch
    # The same items with errors true (or no errors field): each read.
    for flagged in ({**body, "errors": True}, {"items": body["items"]}):
        outcome = classify(batch, 200, flagged)
        assert not outcome.delivered and [f.envelope for f in outcome.rejected] == batch
    # A count that does not match the batch is still retried whole, errors or not.
    assert [f.envelope for f in classify(batch, 200, {"errors": False, "items": []}).retry] == batch
