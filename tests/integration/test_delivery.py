"""End to end against the real OpenSearch node: every accepted event indexed exactly once."""

import asyncio
import re
import subprocess
import time
import uuid

import msgspec

from event_collector.envelope import index_name
from support import REPO, event, metric, send_all, wait_until


def test_the_readme_curl_example_lands_with_the_contract_shape(collector, opensearch):
    readme = (REPO / "README.md").read_text()
    curl = re.search(r"<!-- curl-example -->\s*```bash\n(.*?)```", readme, re.S).group(1)
    curl = curl.replace("localhost:3000", f"127.0.0.1:{collector.port}").replace("$TOKEN", collector.token("ada"))
    log_id = re.search(r'"log_id": "([^"]+)"', curl).group(1)
    before = time.time()
    result = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
    assert msgspec.json.decode(result.stdout) == {"status": "created"}

    wait_until(lambda: opensearch.count(collector.environment) == 1, message="the curl event to be indexed")
    [hit] = opensearch.search(collector.environment, {"term": {"log_id": log_id}})
    assert hit["_id"] == log_id
    assert hit["_index"] == index_name(collector.environment, before)
    document = hit["_source"]
    received_at = document.pop("received_at")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", received_at)
    assert document == {
        "log_id": log_id, "user_id": "ada",
        "device_uuid": "3f2c8a9e-1b7d-4c55-9e0a-5d1f7b2c6a10", "app_version": "2.4.1", "os_version": "iOS 18.1",
        "user_agent": "ExampleApp/2.4.1",
        "event_info": {"page": "/home", "event": "click", "label": "button_click", "target": "#buy",
                       "section": "header", "param": {"price": "1200", "currency": "KRW"}},
        # Added after the original's shape: no device time, so the event happened when received; the
        # client is curl's address; no place or device parsing by default.
        "event_time": received_at, "event_time_clamped": False, "timestamp": None, "sent_at": None,
        "client_ip": "127.0.0.1", "geo": None, "user_agent_info": None,
    }
    mapping = opensearch.http.get(f"/{hit['_index']}/_mapping").json()[hit["_index"]]["mappings"]["properties"]
    assert mapping["event_info"]["properties"]["param"]["type"] == "flat_object"
    assert mapping["received_at"]["type"] == "date"
    assert mapping["log_id"]["type"] == "keyword"


def test_concurrent_clients_and_retries_index_every_event_exactly_once(collector, opensearch):
    originals = [event(f"e-{uuid.uuid4().hex}") for _ in range(20_000)]
    retries = originals[::10]
    statuses = asyncio.run(send_all(collector.url, collector.token(), originals + retries))
    assert statuses.count(200) == 22_000

    wait_until(lambda: opensearch.count(collector.environment) >= 20_000, timeout=120,
               message="20,000 documents")
    counts = opensearch.log_id_counts(collector.environment)
    assert set(counts) == {e["log_id"] for e in originals}
    assert set(counts.values()) == {1}
    # Each accepted request was shipped once: 20,000 created, 2,000 answered 409 as already there.
    wait_until(lambda: metric(collector, "event_collector_events_delivered_total") >= 22_000, timeout=60,
               message="every envelope settled")
    assert metric(collector, "event_collector_events_delivered_total") == 22_000
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")


def test_a_full_buffer_answers_pending_and_still_delivers_everything(collector_factory, opensearch):
    # Batches larger than the buffer: the one shipper only empties it once a second. The replay interval
    # is an hour, so the overflow comes back only because the replayer goes as soon as half the buffer is free.
    collector = collector_factory(QUEUE_CAPACITY=50, BULK_SIZE=1000, BULK_WORKERS=1, FLUSH_INTERVAL_SECONDS=1,
                                  BULK_LINGER_SECONDS=1, PENDING_REPLAY_INTERVAL_SECONDS=3600)
    events = [event() for _ in range(1000)]
    answers = [collector.post_event(e).json()["status"] for e in events]
    assert answers.count("created") >= 50
    assert answers.count("pending") > 0, "a 50-event buffer took 1,000 events without overflowing"

    wait_until(lambda: opensearch.count(collector.environment) >= 1000, timeout=120,
               message="all 1,000 events indexed")
    counts = opensearch.log_id_counts(collector.environment)
    assert set(counts) == {e["log_id"] for e in events}
    assert set(counts.values()) == {1}
    wait_until(lambda: collector.pending_rows() == 0, timeout=30, message="the pending table to empty")


def test_a_write_blocked_index_makes_items_retry_until_unblocked(collector_factory, opensearch):
    # Retries come every second here: enough attempts that none runs out while the index is blocked.
    collector = collector_factory(MAX_DELIVERY_ATTEMPTS=1000)
    collector.post_event(event("first"))
    wait_until(lambda: opensearch.count(collector.environment) == 1, message="the first event")
    index = index_name(collector.environment, time.time())
    blocked = opensearch.http.put(f"/{index}/_settings", json={"index.blocks.write": True})
    assert blocked.status_code == 200, blocked.text
    try:
        events = [event() for _ in range(100)]
        assert {collector.post_event(e).json()["status"] for e in events} <= {"created", "pending"}
        wait_until(lambda: metric(collector, "event_collector_events_retried_total") >= 100, timeout=30,
                   message="the blocked items to be kept for retry")
        # An event moving from the journal to the pending table is in both for a moment: wait for it to settle.
        wait_until(lambda: collector.pending_rows() == 100, timeout=30, message="100 events kept for retry")
        assert opensearch.count(collector.environment) == 1
    finally:
        opensearch.http.put(f"/{index}/_settings", json={"index.blocks.write": False})
    wait_until(lambda: opensearch.count(collector.environment) == 101, timeout=60, message="all delivered")
    wait_until(lambda: collector.pending_rows() == 0, timeout=30, message="the pending table to empty")
    assert collector.dead_letters() == []


def test_an_event_opensearch_rejects_is_dead_lettered_without_holding_up_the_rest(collector, opensearch):
    index = index_name(collector.environment, time.time())
    # A label mapped as a number: any event whose label is not numeric is a mapping conflict.
    created = opensearch.http.put(f"/{index}", json={"mappings": {"properties": {
        "event_info": {"properties": {"label": {"type": "long"}}}}}})
    assert created.status_code == 200, created.text
    good = [event(label=str(n)) for n in range(40)]
    poison = [event(f"poison-{n}", label="not-a-number") for n in range(5)]
    stream = good[:20] + poison + good[20:]
    assert {collector.post_event(e).status_code for e in stream} == {200}

    wait_until(lambda: len(collector.dead_letters()) == 5, timeout=60, message="5 dead letters")
    wait_until(lambda: opensearch.count(collector.environment) == 40, timeout=60, message="the 40 good events")
    dead = collector.dead_letters()
    assert sorted(log_id for log_id, _ in dead) == sorted(e["log_id"] for e in poison)
    assert all("mapper_parsing_exception" in reason for _, reason in dead)
    assert set(opensearch.log_id_counts(collector.environment)) == {e["log_id"] for e in good}
    wait_until(lambda: collector.pending_rows() == 0, timeout=30, message="no retries left")
