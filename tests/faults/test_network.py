"""A network path to OpenSearch that hangs without closing: requests time out, nothing is lost."""

import signal

import pytest

from support import OPENSEARCH_URL, Load, StallingProxy, assert_delivered_exactly_once, event, metric, wait_until


@pytest.fixture
def proxy():
    proxy = StallingProxy(int(OPENSEARCH_URL.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


def test_a_hanging_network_times_out_keeps_events_pending_then_delivers_them(collector_factory, opensearch, proxy):
    # A small buffer, so that what the senders hold during the stall soon overflows into the store.
    collector = collector_factory(ACK_MODE="memory", OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}",
                                  OPEN_SEARCH_TIMEOUT_SECONDS=2, QUEUE_CAPACITY=200, BULK_SIZE=50, BULK_WORKERS=2)
    with Load(collector, clients=2) as load:
        wait_until(lambda: opensearch.count(collector.environment) >= 200, message="delivery through the proxy")
        proxy.forwarding.clear()
        wait_until(lambda: collector.pending_rows() >= 200, timeout=60, message="timed-out events pending")
        wait_until(lambda: "OPEN_SEARCH_TIMEOUT_SECONDS" in collector.log(), timeout=30, message="bulk requests timing out")
        proxy.forwarding.set()
        resumed_at = len(load.accepted)
        wait_until(lambda: len(load.accepted) >= resumed_at + 200, message="load after the network recovers")

    assert_delivered_exactly_once("hanging network (proxy stops forwarding)", load, opensearch, collector.environment,
                                  fault="opensearch_slow", ack_mode="memory",
                                  settings=collector.report_settings("OPEN_SEARCH_TIMEOUT_SECONDS", "QUEUE_CAPACITY"))
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")


def test_a_shutdown_whose_grace_runs_out_stores_the_batches_in_flight(collector_factory, opensearch, proxy,
                                                                        tmp_path):
    database = tmp_path / "grace.db"
    # Requests hang far longer than the grace period: the shippers must be cut off holding their batches.
    stuck = collector_factory(DATABASE=database, ACK_MODE="memory", OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}",
                              OPEN_SEARCH_TIMEOUT_SECONDS=300, SHUTDOWN_GRACE_SECONDS=1, BULK_SIZE=50)
    wait_until(lambda: "index template" in stuck.log(), message="the template installed through the proxy")
    proxy.forwarding.clear()
    events = [event() for _ in range(400)]
    assert {stuck.post_event(e).status_code for e in events} == {200}
    # No bulk request has come back: the senders hold every event they took when the stop begins.
    assert sum(metric(stuck, "event_collector_bulk_requests_total", result=result)
               for result in ("ok", "failed", "rejected", "paused", "too_large")) == 0
    assert stuck.stop(signal.SIGTERM) == 0
    assert "grace period of 1 s over" in stuck.log()
    assert stuck.pending_rows() == 400

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=stuck.environment)
    assert_delivered_exactly_once("SIGTERM with hung bulk requests (grace over)", [e["log_id"] for e in events],
                                  opensearch, restarted.environment, fault="graceful_stop", ack_mode="durable",
                                  settings=stuck.report_settings("SHUTDOWN_GRACE_SECONDS"))
