"""POST /v1/receipts against real collectors and the real OpenSearch node: each state, who may ask, two
replicas, and the refusals (tests/security/test_receipts_refusals.py has the hostile bodies)."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone

from event_collector.envelope import index_name
from support import event, metric, wait_until

KEY = "wk_web_" + "a" * 24
OTHER_KEY = "wk_ios_" + "b" * 24


def receipts(collector, ids: list[str], headers: dict[str, str] | None = None, subject: str = "user-1") -> dict:
    # A just-made index answers searches 503 until its shard is active: the collector says 503 then, and a
    # client asks again after Retry-After.
    response = wait_until(lambda: (r := collector.http.post(
        "/v1/receipts", json={"ids": ids}, headers=headers or collector.auth(subject))).status_code != 503 and r,
        timeout=30, message="an answer other than 503")
    assert response.status_code == 200, response.text
    answer = response.json()["receipts"]
    assert set(answer) == set(ids)
    return answer


def state(collector, log_id: str, **kwargs) -> dict:
    return receipts(collector, [log_id], **kwargs)[log_id]


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def parsed(iso: str) -> float:
    assert iso.endswith("Z"), iso
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def poisoned_index(opensearch, environment: str) -> str:
    """This month's index, made with `event_info.label` a number: an event with a text label is refused."""
    index = index_name(environment, time.time())
    created = opensearch.http.put(f"/{index}", json={"mappings": {"properties": {
        "event_info": {"properties": {"label": {"type": "long"}}}}}})
    assert created.status_code == 200, created.text
    return index


def test_an_event_is_in_flight_until_delivered_then_indexed_without_a_gap(collector_factory):
    # Batches of two, never cut early: the first event waits in the buffer until the second comes.
    collector = collector_factory(BULK_SIZE=2, FLUSH_INTERVAL_SECONDS=3600, BULK_LINGER_SECONDS=3600,
                                  RECEIPTS_RATE_LIMIT=0)
    first, second = event(), event()
    before = time.time()
    assert collector.post_event(first).status_code == 200
    waiting = state(collector, first["log_id"])
    assert waiting["state"] == "in_flight", waiting
    assert before - 1 <= parsed(waiting["accepted_at"]) <= time.time() + 1

    assert collector.post_event(second).status_code == 200
    seen = []
    wait_until(lambda: seen.append(receipts(collector, [first["log_id"], second["log_id"]]))
               or all(r["state"] == "indexed" for r in seen[-1].values()), timeout=30, interval=0.02,
               message="both indexed")
    # Delivered events are answered from memory until OpenSearch's refresh makes them searchable: never unknown.
    assert {r["state"] for answer in seen for r in answer.values()} <= {"in_flight", "indexed"}, seen
    month = index_name(collector.environment, time.time())
    assert seen[-1] == {e["log_id"]: {"state": "indexed", "index": month} for e in (first, second)}
    # Still indexed once the book has forgotten them: from OpenSearch now.
    assert wait_until(lambda: state(collector, first["log_id"]) == {"state": "indexed", "index": month}, timeout=30)


def test_an_event_opensearch_refuses_for_now_is_pending_with_its_attempts_and_error(collector_factory, opensearch):
    collector = collector_factory(MAX_DELIVERY_ATTEMPTS=1000)
    index = index_name(collector.environment, time.time())
    opensearch.http.put(f"/{index}").raise_for_status()
    opensearch.http.put(f"/{index}/_settings", json={"index.blocks.write": True}).raise_for_status()
    waiting = event()
    assert collector.post_event(waiting).status_code == 200

    receipt = wait_until(lambda: (r := state(collector, waiting["log_id"]))["state"] == "pending" and r, timeout=60,
                         message="the event pending")
    assert receipt["attempts"] >= 1
    assert "cluster_block_exception" in receipt["last_error"], receipt
    assert time.time() - 60 <= parsed(receipt["next_attempt_at"]) <= time.time() + 60

    opensearch.http.put(f"/{index}/_settings", json={"index.blocks.write": None}).raise_for_status()
    wait_until(lambda: state(collector, waiting["log_id"]) == {"state": "indexed", "index": index}, timeout=60,
               message="the event indexed once the block is lifted")


def test_a_dead_letter_is_answered_with_opensearchs_reason_to_its_sender_and_one_replica(collector_factory,
                                                                                       opensearch, tmp_path):
    replica_a = collector_factory()
    replica_b = collector_factory(SERVER_ENVIRONMENT=replica_a.environment, DATABASE=tmp_path / "replica-b.db")
    index = poisoned_index(opensearch, replica_a.environment)
    good, poison = event(label="12"), event(label="oops")
    for one in (good, poison):
        assert replica_a.post_event(one).status_code == 200
    ids = [good["log_id"], poison["log_id"]]

    wait_until(lambda: receipts(replica_a, ids)[poison["log_id"]]["state"] == "dead_lettered", timeout=60,
               message="the poison event dead-lettered")
    answer = wait_until(lambda: (r := receipts(replica_a, ids))[good["log_id"]]["state"] == "indexed" and r,
                        timeout=60, message="the good event indexed")
    assert answer[good["log_id"]] == {"state": "indexed", "index": index}
    letter = answer[poison["log_id"]]
    assert "mapper_parsing_exception" in letter["reason"] and "event_info.label" in letter["reason"], letter
    assert time.time() - 120 <= parsed(letter["failed_at"]) <= time.time() + 1

    # Another user of the same replica is told nothing of either.
    assert receipts(replica_a, ids, subject="user-2") == {log_id: {"state": "unknown"} for log_id in ids}
    # Another replica (its own store, the same OpenSearch) knows what is indexed once OpenSearch made it
    # searchable (its refresh, a second), and nothing of A's dead letters.
    wait_until(lambda: receipts(replica_b, ids)[good["log_id"]]["state"] == "indexed", timeout=30,
               message="the good event searchable at replica B")
    assert receipts(replica_b, ids) == {good["log_id"]: {"state": "indexed", "index": index},
                                        poison["log_id"]: {"state": "unknown"}}
    assert metric(replica_a, "event_collector_receipts_requests_total", outcome="answered") >= 3
    assert metric(replica_a, "event_collector_receipts_total", state="dead_lettered") >= 1


def test_a_source_sees_its_own_events_only_and_the_jwt_api_none_of_them(collector_factory, tmp_path):
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"""
sources:
  - name: web
    write_keys: [{KEY}]
    allowed_origins: ["https://shop.example.com"]
  - name: ios
    write_keys: [{OTHER_KEY}]
""")
    collector = collector_factory(SOURCES_FILE=str(sources))
    tracked = {"type": "track", "messageId": f"m-{time.time_ns()}", "userId": "user-1", "event": "Signed Up"}
    assert collector.http.post("/v1/track", json=tracked, headers=basic(KEY)).status_code == 200
    jwt_event = event()
    assert collector.post_event(jwt_event).status_code == 200
    ids = [tracked["messageId"], jwt_event["log_id"]]

    month = index_name(collector.environment, time.time(), "events_web")
    answer = wait_until(lambda: (r := receipts(collector, ids, basic(KEY)))[ids[0]]["state"] == "indexed" and r,
                        timeout=60, message="the message indexed")
    assert answer == {ids[0]: {"state": "indexed", "index": month}, ids[1]: {"state": "unknown"}}
    assert receipts(collector, ids, basic(OTHER_KEY)) == {log_id: {"state": "unknown"} for log_id in ids}
    # The message's userId is user-1, but it came through the tracking API: not the JWT user's event.
    mine = wait_until(lambda: (r := receipts(collector, ids))[ids[1]]["state"] == "indexed" and r, timeout=60)
    assert mine[ids[0]] == {"state": "unknown"}

    # Browsers: a preflight from the source's origin passes; a request from an origin it does not name is 403.
    preflight = collector.http.options("/v1/receipts", headers={
        "Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example.com"
    other_origin = collector.http.post("/v1/receipts", json={"ids": ids},
                                       headers={**basic(KEY), "Origin": "https://evil.example.com"})
    assert other_origin.status_code == 403, other_origin.text


def test_receipts_are_503_while_opensearch_cannot_be_asked(collector_factory):
    collector = collector_factory(OPEN_SEARCH_DNS="http://127.0.0.1:9")
    one = event()
    assert collector.post_event(one).status_code == 200
    response = collector.http.post("/v1/receipts", json={"ids": [one["log_id"]]}, headers=collector.auth())
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] and "OpenSearch" in response.json()["error"]
    assert collector.http.get("/ping").text == "pong"


async def test_without_a_store_as_in_kafka_mode_receipts_come_from_opensearch_alone(opensearch):
    from event_collector.receipts import Caller, Receipts
    from event_collector.settings import load_settings
    from support import unique_environment

    environment = unique_environment()
    index = index_name(environment, time.time())
    opensearch.http.put(f"/{index}/_doc/indexed-one", params={"refresh": "true"},
                        json={"log_id": "indexed-one", "user_id": "user-1"}).raise_for_status()
    settings = load_settings({"JWT_SECRET": "s" * 32, "SERVER_ENVIRONMENT": environment,
                              "OPEN_SEARCH_DNS": opensearch.url, "ACK_MODE": "memory"}, env_file=None)
    receipts_of_kafka_mode = Receipts(settings, None, None, None)  # the client is its own, made when first asked
    try:
        answer = await receipts_of_kafka_mode.answer(Caller(user_id="user-1"), ["indexed-one", "never-sent"])
        assert answer == {"indexed-one": {"state": "indexed", "index": index}, "never-sent": {"state": "unknown"}}
        assert (await receipts_of_kafka_mode.answer(Caller(user_id="user-2"), ["indexed-one"])) == {
            "indexed-one": {"state": "unknown"}}
    finally:
        await receipts_of_kafka_mode.close()
        opensearch.http.delete(f"/{index}")
