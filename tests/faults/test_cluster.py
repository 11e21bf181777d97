"""A collector given every node of a real 3-node cluster (separate JVMs) keeps delivering when one is killed.

Takes 1.5 to 3 minutes on a busy 2-core machine, most of it starting the cluster (3 JVMs of 512 MB heap).
"""

import time

import pytest

from support import (OPENSEARCH_URL, CollectorProcess, DevCluster, Load, assert_delivered_exactly_once, event, free_port,
                     metric, wait_until)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = DevCluster(tmp_path_factory.mktemp("cluster")).start()
    yield nodes
    nodes.stop()


def test_killing_a_node_that_holds_primaries_under_load_loses_and_duplicates_nothing(cluster, tmp_path):
    started = time.monotonic()
    collector = CollectorProcess(tmp_path, opensearch_url=cluster.dns, BULK_SIZE=50, BULK_WORKERS=4).start()
    pattern = f"events_{collector.environment}_*"
    try:
        with Load(collector, clients=1) as load:
            wait_until(lambda: metric(collector, "event_collector_events_delivered_total") >= 100, timeout=120,
                       message="the first events delivered")
            # The index the template made: one primary and one replica (OpenSearch's default), both started,
            # so that no acknowledged write lives on one node only.
            health = cluster.client().http.get(f"/_cluster/health/{pattern}",
                                               params={"wait_for_status": "green", "timeout": "60s"}).json()
            assert health["status"] == "green" and health["active_shards"] == 2 * health["active_primary_shards"], health
            victim = max(cluster.primaries(pattern).items(), key=lambda item: item[1])[0]
            delivered_before = metric(collector, "event_collector_events_delivered_total")
            cluster.kill(victim)
            # Delivery goes on through the survivors, without waiting for the dead node to come back.
            wait_until(lambda: metric(collector, "event_collector_events_delivered_total") >= delivered_before + 200,
                       timeout=180, message="deliveries after the kill")
        assert metric(collector, "event_collector_opensearch_node_failures_total", node=victim) >= 1
        assert set(load.statuses) == {200}, load.statuses
        assert_delivered_exactly_once("3-node cluster, one node killed under load", load, cluster.client(),
                                      collector.environment)
        wait_until(lambda: metric(collector, "event_collector_events_delivered_total") >= len(load.accepted),
                   timeout=60, message="the collector counting every delivery")
        assert metric(collector, "event_collector_events_delivered_total") == len(load.accepted)
        assert collector.dead_letters() == []
        assert "set aside" in collector.log()
    finally:
        collector.stop()
    print(f"cluster kill test: {time.monotonic() - started:.0f} s after the cluster was up")


def test_a_node_that_refuses_is_set_aside_and_delivery_goes_on_without_a_pause(collector_factory, opensearch):
    refusing = f"http://127.0.0.1:{free_port()}"
    collector = collector_factory(OPEN_SEARCH_DNS=f"{refusing},{OPENSEARCH_URL}", BULK_SIZE=10)
    events = [event() for _ in range(100)]
    assert {collector.post_event(e).status_code for e in events} == {200}
    assert_delivered_exactly_once("one of two nodes refusing", [e["log_id"] for e in events], opensearch,
                                  collector.environment)
    assert metric(collector, "event_collector_opensearch_node_failures_total", node=refusing) >= 1
    assert metric(collector, "event_collector_delivery_pauses_total") == 0
    assert collector.dead_letters() == []
