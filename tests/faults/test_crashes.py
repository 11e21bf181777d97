"""Processes killed with SIGKILL: nothing answered 2xx is lost, nothing is indexed twice."""

import signal

from support import Load, assert_delivered_exactly_once, event, wait_until


def test_kill_9_of_the_collector_under_load_loses_nothing_in_durable_mode(collector_factory, opensearch):
    collector = collector_factory(ACK_MODE="durable")
    with Load(collector, clients=4) as load:
        for kill in range(3):
            wait_until(lambda: len(load.accepted) >= 500 * (kill + 1), timeout=60,
                       message=f"load before kill {kill + 1}")
            collector.process.send_signal(signal.SIGKILL)
            collector.process.wait(30)
            collector.start()
        wait_until(lambda: len(load.accepted) >= 2000, timeout=60, message="load after the last restart")
    assert load.count("ConnectError") + load.count("RemoteProtocolError") + load.count("ReadError") > 0
    assert_delivered_exactly_once("kill -9 collector x3 (durable)", load, opensearch, collector.environment)
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")


def test_kill_9_of_opensearch_under_load_loses_and_duplicates_nothing(collector_factory, own_opensearch):
    collector = collector_factory(OPEN_SEARCH_DNS=own_opensearch.url, OPEN_SEARCH_TIMEOUT_SECONDS=5)
    with Load(collector, clients=4) as load:
        wait_until(lambda: len(load.accepted) >= 1000, timeout=60, message="load before the kill")
        own_opensearch.kill()
        before_restart = len(load.accepted)
        wait_until(lambda: len(load.accepted) >= before_restart + 500, timeout=60, message="load while down")
        own_opensearch.start()
        wait_until(lambda: len(load.accepted) >= before_restart + 1500, timeout=60, message="load after restart")
    assert_delivered_exactly_once("kill -9 OpenSearch JVM", load, own_opensearch.client, collector.environment)
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")


def test_a_store_left_by_a_crashed_process_is_replayed_on_restart(collector_factory, opensearch, tmp_path):
    database = tmp_path / "crashed.db"
    crashed = collector_factory(DATABASE=database, ACK_MODE="durable", OPEN_SEARCH_DNS="http://127.0.0.1:9")
    events = [event() for _ in range(300)]
    assert {crashed.post_event(e).status_code for e in events} == {200}
    crashed.stop(signal.SIGKILL)
    assert crashed.pending_rows() == 300

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=crashed.environment)
    assert_delivered_exactly_once("restart on a crashed process's store", [e["log_id"] for e in events], opensearch,
                        restarted.environment)
    wait_until(lambda: restarted.pending_rows() == 0, timeout=60, message="the pending table to empty")
