"""A collector given every node of a real 3-node cluster (separate JVMs) keeps delivering when one is killed;
two replicas behind haproxy keep every event when one of them and one node are killed in the same load.

Takes 3 to 5 minutes on a busy 2-core machine, much of it starting the cluster (3 JVMs of 512 MB heap),
which the tests share.
"""

import signal
import time

import pytest

import httpx

from support import (OPENSEARCH_URL, CollectorProcess, DevCluster, Load, ResendingLoad, behind_haproxy,
                     assert_delivered_exactly_once, event, free_port, metric, unique_environment, wait_until)


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
                                      collector.environment, fault="opensearch_node_killed", ack_mode="durable",
                                      settings=collector.report_settings() | {"OpenSearch": "3 nodes, 1 replica"})
        wait_until(lambda: metric(collector, "event_collector_events_delivered_total") >= len(load.accepted),
                   timeout=60, message="the collector counting every delivery")
        assert metric(collector, "event_collector_events_delivered_total") == len(load.accepted)
        assert collector.dead_letters() == []
        assert "set aside" in collector.log()
    finally:
        collector.stop()
    print(f"cluster kill test: {time.monotonic() - started:.0f} s after the cluster was up")


def test_two_replicas_keep_every_event_when_one_and_a_node_are_killed_in_the_same_load(cluster, tmp_path):
    """Each replica has its own store; haproxy balances them round-robin; clients resend what got no final
    answer (log_id makes that harmless). One replica gets kill -9 and is restarted on its store, and the node
    holding the most primaries gets kill -9, while the load goes on."""
    cluster.restart_killed()  # the test above killed one: all three again, so the cluster keeps its quorum
    environment = unique_environment()
    replicas = [CollectorProcess(tmp_path, opensearch_url=cluster.dns, SERVER_ENVIRONMENT=environment,
                                 DATABASE=tmp_path / f"replica-{n}.db", ACK_MODE="durable", BULK_SIZE=50)
                for n in range(2)]
    pattern = f"events_{environment}_*"
    with behind_haproxy(tmp_path, replicas) as balancer:
        victim, survivor = replicas
        with ResendingLoad(balancer.url, victim.auth()) as load:
            wait_until(lambda: len(load.accepted) >= 300, timeout=90, message="load before the kills")
            assert metric(victim, "event_collector_events_received_total", outcome="created") > 0
            # Accepted is not yet indexed: the first bulk makes the index (the health call below does not
            # wait for an index that does not exist yet).
            wait_until(lambda: cluster.primaries(pattern), timeout=60, message="the index made by the first bulk")
            cluster.client().http.get(f"/_cluster/health/{pattern}",
                                      params={"wait_for_status": "green", "timeout": "60s"}, timeout=70)
            node = max(cluster.primaries(pattern).items(), key=lambda item: item[1])[0]
            victim.process.send_signal(signal.SIGKILL)
            cluster.kill(node)
            victim.process.wait(30)
            after_kills = len(load.accepted)
            wait_until(lambda: len(load.accepted) >= after_kills + 300, timeout=120, message="load on one replica")
            victim.http = httpx.Client(base_url=victim.url, timeout=30)
            victim.start()  # on its own store: what it had acknowledged is replayed from there
            wait_until(lambda: metric(victim, "event_collector_events_received_total", outcome="created") > 0,
                       timeout=90, message="the restarted replica taking events again")
            after_restart = len(load.accepted)
            wait_until(lambda: len(load.accepted) >= after_restart + 300, timeout=90, message="load on both again")
        print(f"sent {load.sent}, resent {load.resent} times, accepted {len(load.accepted)}")
        assert len(set(load.accepted)) == len(load.accepted)
        assert_delivered_exactly_once("2 replicas behind haproxy, kill -9 of one and of a node", load.accepted,
                                      cluster.client(), environment, sent=load.sent, fault="collector_killed",
                                      ack_mode="durable", settings=victim.report_settings() | {
                                          "collector replicas": "2 behind haproxy", "OpenSearch": "3 nodes, 1 killed"})
        for replica in replicas:
            wait_until(lambda: replica.pending_rows() == 0, timeout=90, message="every store emptied")


def test_a_node_that_refuses_is_set_aside_and_delivery_goes_on_without_a_pause(collector_factory, opensearch):
    refusing = f"http://127.0.0.1:{free_port()}"
    collector = collector_factory(OPEN_SEARCH_DNS=f"{refusing},{OPENSEARCH_URL}", BULK_SIZE=10)
    events = [event() for _ in range(100)]
    assert {collector.post_event(e).status_code for e in events} == {200}
    assert_delivered_exactly_once("one of two nodes refusing", [e["log_id"] for e in events], opensearch,
                                  collector.environment, fault="opensearch_node_killed", ack_mode="durable",
                                  settings=collector.report_settings() | {"OpenSearch": "2 nodes, 1 refusing"})
    assert metric(collector, "event_collector_opensearch_node_failures_total", node=refusing) >= 1
    assert metric(collector, "event_collector_delivery_pauses_total") == 0
    assert collector.dead_letters() == []
