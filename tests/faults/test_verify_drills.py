"""`event-collector verify` during failure drills, against real collectors, haproxy and OpenSearch nodes: it
reports the loss of a misconfigured memory-mode collector killed with kill -9 (checking in OpenSearch or
through the receipts), and passes a durable pair of replicas through the kill -9 of one and a restart of
OpenSearch. The healthy case: tests/integration/test_verify.py."""

from __future__ import annotations

import json
import re
import signal

import httpx
import pytest

from support import (OPENSEARCH_URL, CollectorProcess, StallingProxy, behind_haproxy, metric, unique_environment,
                     verify_process, wait_until)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("check", ["opensearch", "receipts"])
def test_verify_reports_what_a_memory_mode_collector_lost_to_kill_9(collector_factory, opensearch, check):
    """Misconfigured on purpose: memory mode, and an OpenSearch path that hangs, so that every event answered
    2xx sits in the process's memory when it is killed. The operator then starts it again, on the same store
    and port, with the right OpenSearch: what was in memory is gone, and verify says so either way it checks."""
    proxy = StallingProxy(int(OPENSEARCH_URL.rsplit(":", 1)[1]))
    try:
        collector = collector_factory(ACK_MODE="memory", OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}",
                                      OPEN_SEARCH_TIMEOUT_SECONDS=300, BULK_SIZE=50)
        wait_until(lambda: "index template" in collector.log(), message="the template installed through the proxy")
        proxy.forwarding.clear()
        checked_in = (["--opensearch", OPENSEARCH_URL, "--index-pattern", f"events_{collector.environment}_*"]
                      if check == "opensearch" else [])
        with verify_process(collector.url, "--events", "200", "--rate", "100", "--token", collector.token(),
                            *checked_in, "--deadline", "15", "--json") as verify:
            wait_until(lambda: metric(collector, "event_collector_events_received_total", outcome="created") >= 200,
                       timeout=60, message="every event answered")
            collector.process.send_signal(signal.SIGKILL)
            collector.process.wait(30)
            assert collector.pending_rows() == 0  # nothing of it reached the store
            collector.env["OPEN_SEARCH_DNS"] = OPENSEARCH_URL
            collector.start()
            assert verify.poll() is None, "verify was still waiting when the collector died and came back"
            out, err = verify.communicate(timeout=120)
        assert verify.returncode == 1, out + err
        report = json.loads(out)
        # What really happened, read while the stalled path still holds what was on the wire (closing the proxy
        # lets that through): OpenSearch has what it has, and verify's figures are those.
        indexed = opensearch.log_id_counts(collector.environment)
    finally:
        proxy.close()
    assert report["sent"] == report["acknowledged"] == 200 and report["indexed"] == len(indexed)
    assert report["lost"] == 200 - len(indexed) > 150
    assert report["verdict"].startswith(f"FAIL: {report['lost']} of 200 events answered 2xx were not indexed "
                                        "within 15 s")
    if check == "opensearch":
        assert report["duplicated"] == 0 and report["failed_polls"] == 0
    else:
        # The restarted process never held them: as far as the deployment can tell, they never came.
        assert report["duplicated"] is None and report["lost_states"] == {"unknown": report["lost"]}


@pytest.mark.parametrize("check", ["opensearch", "receipts"])
def test_verify_passes_a_durable_pair_through_a_replica_kill_and_an_opensearch_restart(own_opensearch, tmp_path,
                                                                                       check):
    """Two durable replicas behind haproxy, each on its own store. While verify sends (resending without a 2xx,
    as an SDK would), OpenSearch is stopped, one replica gets kill -9 holding events it answered 2xx for and
    is restarted on its store, and OpenSearch is started again."""
    environment = unique_environment()
    replicas = [CollectorProcess(tmp_path, opensearch_url=own_opensearch.url, SERVER_ENVIRONMENT=environment,
                                 DATABASE=tmp_path / f"replica-{n}.db", ACK_MODE="durable",
                                 OPEN_SEARCH_TIMEOUT_SECONDS=5)
                for n in range(2)]
    victim = replicas[0]
    checked_in = (["--opensearch", own_opensearch.url, "--index-pattern", f"events_{environment}_*"]
                  if check == "opensearch" else [])
    with behind_haproxy(tmp_path, replicas) as balancer, verify_process(
            balancer.url, "--events", "600", "--rate", "20", "--token", victim.token(), *checked_in,
            "--retries", "5", "--deadline", "180") as verify:
        wait_until(lambda: metric(victim, "event_collector_events_received_total", outcome="created") >= 30,
                   timeout=60, message="the victim taking events")
        own_opensearch.stop()
        taken = metric(victim, "event_collector_events_received_total", outcome="created")
        wait_until(lambda: metric(victim, "event_collector_events_received_total", outcome="created") >= taken + 30,
                   timeout=60, message="the victim taking events while OpenSearch is down")
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(30)
        assert victim.pending_rows() >= 30, "the victim died holding events it had answered 2xx for"
        victim.http = httpx.Client(base_url=victim.url, timeout=30)
        victim.start()  # on its own store: what it had acknowledged is delivered from its journal
        own_opensearch.start()
        assert verify.poll() is None, "verify ran through both faults"
        out, err = verify.communicate(timeout=400)
    options = " ".join(["--token", "…", *checked_in, "--retries", "5", "--deadline", "180"])
    print(f"\n$ event-collector verify {balancer.url} --events 600 --rate 20 {options}\n{out}")
    assert verify.returncode == 0, out + err
    figures = dict(re.findall(r"^(sent|answered 2xx|indexed|lost|duplicated) +(\d+)", out, re.M))
    expected = {"sent": "600", "answered 2xx": "600", "indexed": "600", "lost": "0"}
    if check == "opensearch":
        assert figures == {**expected, "duplicated": "0"}, out
        assert "PASS: all 600 events answered 2xx are indexed, each exactly once" in out
    else:
        assert figures == expected, out
        assert "PASS: all 600 events answered 2xx are indexed (receipts cannot see duplicates)" in out
    # OpenSearch's own count agrees: every id of the run, once.
    run_id = out.split()[2].rstrip(":")
    counts = own_opensearch.client.log_id_counts(environment)
    assert counts == {f"verify-{run_id}-{n}": 1 for n in range(600)}
    assert re.search(r"^checking +\d+ polls \([1-9]\d* failed", out, re.M), "verify saw OpenSearch down"
