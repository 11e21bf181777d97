"""OpenSearch refusing work (429) and the pending store at its cap: backpressure without loss."""

import signal
import time

import pytest

from event_collector.envelope import index_name
from support import DevNode, Load, assert_delivered_exactly_once, event, metric, wait_until


@pytest.fixture(scope="module")
def tiny_write_pool(tmp_path_factory):
    """A node with one write thread and a queue of one: concurrent bulk requests get 429 per shard."""
    node = DevNode(tmp_path_factory.mktemp("opensearch-429"),
                   settings="thread_pool.write.size=1,thread_pool.write.queue_size=1").start()
    yield node
    node.stop()


def test_items_refused_with_429_are_retried_alone_until_delivered(collector_factory, tiny_write_pool):
    collector = collector_factory(ACK_MODE="memory", OPEN_SEARCH_DNS=tiny_write_pool.url, BULK_SIZE=200,
                                  BULK_WORKERS=10, MAX_DELIVERY_ATTEMPTS=1000)
    # Several shards, so one bulk request is split and only some of its items are refused.
    index = index_name(collector.environment, time.time())
    created = tiny_write_pool.client.http.put(f"/{index}", json={"settings": {"number_of_shards": 6}})
    assert created.status_code == 200, created.text

    with Load(collector, clients=8) as load:
        wait_until(lambda: metric(collector, "event_collector_events_retried_total") > 0 and len(load.accepted) > 3000,
                   timeout=120, message="OpenSearch refusing items with 429")
    assert "429" in collector.log()
    assert_delivered_exactly_once("429 from a one-thread write pool", load, tiny_write_pool.client,
                                  collector.environment, fault="opensearch_429", ack_mode="memory",
                                  settings=collector.report_settings("BULK_SIZE", "BULK_WORKERS"))
    # Had whole batches been resent, items already created would come back as 409 and count again.
    assert metric(collector, "event_collector_events_delivered_total") == len(load.accepted)


def test_a_store_at_its_cap_answers_503_and_every_2xx_is_delivered(collector_factory, opensearch, tmp_path):
    database = tmp_path / "capped.db"
    capped = collector_factory(DATABASE=database, ACK_MODE="durable", OPEN_SEARCH_DNS="http://127.0.0.1:9",
                               PENDING_MAX_BYTES=300_000)
    with Load(capped, clients=4) as load:
        wait_until(lambda: load.count(503) >= 50, timeout=60, message="503 once the store is full")
        assert load.retry_after_missing == 0
        assert capped.http.get("/ping").text == "pong"
    assert capped.stop(signal.SIGTERM) == 0

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=capped.environment)
    counts = assert_delivered_exactly_once("pending store at its cap (503 + Retry-After)", load, opensearch,
                                           restarted.environment, fault="store_at_cap", ack_mode="durable",
                                           settings=capped.report_settings("PENDING_MAX_BYTES"))
    # A 503 is answered before the event is stored: none of the refused events turns up.
    assert set(counts) == set(load.accepted)
    # Once drained, the store takes events again.
    wait_until(lambda: restarted.pending_rows() == 0, timeout=60, message="the pending table to empty")
    assert restarted.post_event(event()).status_code == 200
