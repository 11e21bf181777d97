"""A slow cluster and a full buffer: events wait in memory far longer than any lease once did, and each is
still shipped once (leases of live owners never lapse)."""

from support import Load, StallingProxy, assert_delivered_exactly_once, metric, wait_until, OPENSEARCH_URL


def test_events_waiting_long_in_a_full_buffer_are_shipped_once(collector_factory, opensearch):
    proxy = StallingProxy(int(OPENSEARCH_URL.rsplit(":", 1)[1]))
    try:
        # PENDING_LEASE_SECONDS=1 is what made the old code hand rows still in the buffer to the replayer; the
        # setting is gone (leases no longer lapse) and is ignored now, kept so the test still breaks old code.
        collector = collector_factory(OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}", ACK_MODE="durable",
                                      QUEUE_CAPACITY=300, BULK_WORKERS=1, BULK_SIZE=20, PENDING_LEASE_SECONDS=1)
        wait_until(lambda: "index template" in collector.log(), message="the template installed")
        proxy.delay_seconds = 0.1
        with Load(collector, clients=4) as load:
            wait_until(lambda: len(load.accepted) >= 1500, timeout=120, message="1,500 events through a full buffer")
        assert load.count(200) == len(load.accepted)
        # Still slow while the backlog drains: the buffer has room again, and what it holds has been
        # there for seconds.
        assert_delivered_exactly_once("slow cluster, full buffer (durable)", load, opensearch, collector.environment,
                                      fault="opensearch_slow", ack_mode="durable",
                                      settings=collector.report_settings("QUEUE_CAPACITY"))
        wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")
        # Every event went out once: a second copy would have been answered 409 and counted again.
        assert metric(collector, "event_collector_events_delivered_total") == len(load.accepted)
    finally:
        proxy.close()
