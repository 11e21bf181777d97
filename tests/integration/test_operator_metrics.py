"""The metrics an operator alerts on (docs/metrics.md), read from a real collector's /metrics against the real
OpenSearch node: delivery lag, the age of the oldest event not yet indexed, dead letters by reason class."""

import time

import pytest

from event_collector.envelope import index_name
from support import OPENSEARCH_URL, StallingProxy, event, free_port, metric, wait_until


@pytest.mark.parametrize("ack_mode", ["durable", "memory"])
def test_the_delivery_lag_of_each_indexed_event_is_observed_with_a_plausible_value(collector_factory, opensearch,
                                                                                  ack_mode):
    collector = collector_factory(ACK_MODE=ack_mode)
    sent_at = time.time()
    events = [event() for _ in range(50)]
    assert {collector.post_event(e).status_code for e in events} == {200}
    wait_until(lambda: opensearch.count(collector.environment) == 50, timeout=60, message="50 events indexed")
    indexed_by = time.time() - sent_at
    wait_until(lambda: metric(collector, "event_collector_delivery_lag_seconds_count") == 50, timeout=10,
               message="one lag observation per event")
    lag_sum = metric(collector, "event_collector_delivery_lag_seconds_sum")
    # Each lag is between the 2xx and the test seeing the event indexed (a flush interval of 0.2 s here).
    assert 0 < lag_sum / 50 <= indexed_by, (lag_sum, indexed_by)
    assert metric(collector, "event_collector_delivery_lag_seconds_bucket", le="3600.0") == 50


def test_the_oldest_unindexed_age_grows_while_opensearch_is_unreachable_and_is_0_once_drained(collector_factory,
                                                                                             opensearch):
    proxy = StallingProxy(free_port())  # leads nowhere: OpenSearch unreachable
    try:
        # A small buffer: events wait in the buffer, in the senders' batches and, beyond them, in the store.
        collector = collector_factory(OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}", QUEUE_CAPACITY=50,
                                      BULK_SIZE=20, BULK_WORKERS=2)
        events = [event() for _ in range(200)]
        sending = time.time()
        assert {collector.post_event(e).status_code for e in events} == {200}
        assert collector.pending_rows() > 0
        first = wait_until(lambda: metric(collector, "event_collector_oldest_unindexed_age_seconds") >= 1.0,
                           timeout=30, message="the oldest event's age to pass a second")
        wait_until(lambda: metric(collector, "event_collector_oldest_unindexed_age_seconds") >= first + 1.0,
                   timeout=30, message="the age to grow while nothing is indexed")
        age = metric(collector, "event_collector_oldest_unindexed_age_seconds")
        # No older than the first event sent (give or take the one-second timer): the age is of an event, not of
        # the process.
        assert age <= time.time() - sending + 1.5, age

        proxy.upstream_port = int(OPENSEARCH_URL.rsplit(":", 1)[1])
        wait_until(lambda: opensearch.count(collector.environment) == 200, timeout=90, message="the backlog indexed")
        wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the store emptied")
        wait_until(lambda: metric(collector, "event_collector_oldest_unindexed_age_seconds") == 0, timeout=10,
                   message="the age back to 0 once everything is indexed")
    finally:
        proxy.close()


def test_a_mapping_rejection_counts_as_a_dead_letter_of_class_mapping(collector, opensearch):
    index = index_name(collector.environment, time.time())
    opensearch.http.put(f"/{index}", json={"mappings": {"properties": {
        "event_info": {"properties": {"label": {"type": "long"}}}}}}).raise_for_status()
    assert collector.post_event(event(label="not a number")).status_code == 200
    assert collector.post_event(event(label="12")).status_code == 200
    wait_until(lambda: metric(collector, "event_collector_dead_letters_total", reason_class="mapping") == 1,
               timeout=30, message="one dead letter of class mapping")
    assert metric(collector, "event_collector_dead_letters_total", reason_class="other") == 0
    # The existing name goes on counting as before.
    assert metric(collector, "event_collector_events_dead_lettered_total") == 1
    wait_until(lambda: opensearch.count(collector.environment) == 1, timeout=30, message="the good event indexed")
