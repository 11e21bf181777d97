"""Processes killed with SIGKILL: nothing answered 2xx is lost, nothing is indexed twice."""

import os
import signal
import time
from pathlib import Path

import pytest

from support import Load, assert_delivered_exactly_once, delivery_report, event, wait_until


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
    assert_delivered_exactly_once("kill -9 collector x3 (durable)", load, opensearch, collector.environment,
                                  fault="collector_killed", ack_mode="durable", settings=collector.report_settings())
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
    assert_delivered_exactly_once("kill -9 OpenSearch JVM", load, own_opensearch.client, collector.environment,
                                  fault="opensearch_down", ack_mode="durable", settings=collector.report_settings())
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
                                  restarted.environment, fault="collector_killed", ack_mode="durable",
                                  settings=restarted.report_settings())
    wait_until(lambda: restarted.pending_rows() == 0, timeout=60, message="the pending table to empty")


def worker_pids(collector) -> set[int]:
    children = Path(f"/proc/{collector.process.pid}/task/{collector.process.pid}/children").read_text().split()
    # uvicorn's supervisor also starts multiprocessing's resource tracker; the workers are spawned.
    return {int(pid) for pid in children if b"spawn_main" in _read(f"/proc/{pid}/cmdline")}


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def test_a_worker_killed_among_live_siblings_is_replaced_and_its_events_delivered(collector_factory, opensearch):
    collector = collector_factory(SERVER_WORKERS=2, ACK_MODE="durable", QUEUE_CAPACITY=2000)
    wait_until(lambda: len(worker_pids(collector)) == 2, timeout=30, message="two workers")
    with Load(collector, clients=4) as load:
        wait_until(lambda: len(load.accepted) >= 1000, timeout=60, message="load before the kill")
        victim = min(worker_pids(collector))
        environ = _read(f"/proc/{victim}/environ").decode(errors="replace").split("\0")
        metrics_dir = dict(line.split("=", 1) for line in environ if "=" in line)["PROMETHEUS_MULTIPROC_DIR"]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(worker_pids(collector)) == 2 and victim not in worker_pids(collector), timeout=60,
                   message="the killed worker replaced")
        after_kill = len(load.accepted)
        wait_until(lambda: len(load.accepted) >= after_kill + 1000, timeout=60, message="load after the kill")
    assert_delivered_exactly_once("kill -9 of one worker among two (durable)", load, opensearch,
                                  collector.environment, fault="worker_killed", ack_mode="durable",
                                  settings=collector.report_settings("QUEUE_CAPACITY"))
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")
    # The dead worker's live gauges no longer count in /metrics.
    collector.http.get("/metrics")
    assert not list(Path(metrics_dir).glob(f"gauge_live*_{victim}.db"))


@pytest.mark.parametrize("ack_mode", ["memory", "durable"])
def test_kill_9_while_opensearch_is_unreachable_loses_the_buffer_in_memory_mode_only(collector_factory, opensearch,
                                                                                     tmp_path, ack_mode):
    """The row that keeps the guarantees table honest: memory mode answers 2xx from the buffer, and a kill -9
    loses what the buffer held (by design, docs/guarantees.md); durable mode under the same fault loses none."""
    database = tmp_path / "store.db"
    crashed = collector_factory(DATABASE=database, ACK_MODE=ack_mode, OPEN_SEARCH_DNS="http://127.0.0.1:9")
    with Load(crashed, clients=4) as load:
        wait_until(lambda: len(load.accepted) >= 300, timeout=60, message="300 events answered 2xx")
        crashed.process.send_signal(signal.SIGKILL)
        crashed.process.wait(30)
    stored = crashed.pending_rows()  # what a memory-mode collector wrote down: failed batches, overflow

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=crashed.environment)
    settings = crashed.report_settings("QUEUE_CAPACITY")
    name = f"kill -9, OpenSearch unreachable, under load ({ack_mode})"
    if ack_mode == "durable":
        assert_delivered_exactly_once(name, load, opensearch, restarted.environment, fault="collector_killed",
                                      ack_mode="durable", settings=settings)
        return
    restarted_at = time.monotonic()
    wait_until(lambda: restarted.pending_rows() == 0 and opensearch.count(restarted.environment) >= stored,
               timeout=60, message="what the store held delivered")
    counts = opensearch.log_id_counts(restarted.environment)
    report = delivery_report(name, load, counts, fault="collector_killed",
                             ack_mode="memory", settings=settings, drain_seconds=time.monotonic() - restarted_at,
                             expected_loss=True)
    print(report)
    # What the buffer held is gone, what the store held is delivered, once.
    assert report["lost"] > 0, report
    assert len(counts) == stored and report["duplicated"] == 0, (report, stored)
