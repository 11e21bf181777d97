"""Events OpenSearch rejects: dead-lettered with the reason while the rest flows; requeued once fixed."""

import os
import subprocess
import sys
import time

from event_collector.envelope import index_name
from support import delivery_report, event, wait_until


def cli(collector, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "event_collector.cli", *args], capture_output=True, text=True,
                            env={**os.environ, "DATABASE_URL": f"sqlite://{collector.database}",
                                 "OPEN_SEARCH_DNS": collector.env["OPEN_SEARCH_DNS"],
                                 "SERVER_ENVIRONMENT": collector.environment},
                            cwd=collector.cwd, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_poison_events_are_dead_lettered_then_requeued_after_the_mapping_is_fixed(collector, opensearch):
    index = index_name(collector.environment, time.time())
    created = opensearch.http.put(f"/{index}", json={"mappings": {"properties": {
        "event_info": {"properties": {"label": {"type": "long"}}}}}})
    assert created.status_code == 200, created.text

    stream = []
    for n in range(300):
        poisoned = n % 15 == 7
        stream.append(event(f"poison-{n}" if poisoned else None, label="oops" if poisoned else str(n)))
    assert {collector.post_event(e).status_code for e in stream} == {200}
    poison = {e["log_id"] for e in stream if e["log_id"].startswith("poison-")}
    good = {e["log_id"] for e in stream} - poison

    wait_until(lambda: len(collector.dead_letters()) == len(poison), timeout=60, message="poison dead-lettered")
    wait_until(lambda: opensearch.count(collector.environment) == len(good), timeout=60, message="the rest indexed")
    listing = cli(collector, "dead-letter", "list", "--reason", "mapper_parsing")
    assert all(log_id in listing for log_id in poison)
    assert "failed to parse field [event_info.label]" in listing

    # The fix: malformed values are ignored instead of refused.
    opensearch.http.post(f"/{index}/_close").raise_for_status()
    opensearch.http.put(f"/{index}/_settings", json={"index.mapping.ignore_malformed": True}).raise_for_status()
    opensearch.http.post(f"/{index}/_open", params={"wait_for_active_shards": "1"}).raise_for_status()
    assert f"{len(poison)} dead letters moved back" in cli(collector, "dead-letter", "requeue", "--reason", "mapper")
    requeued = time.monotonic()

    wait_until(lambda: opensearch.count(collector.environment) == len(stream), timeout=60, message="poison delivered")
    counts = opensearch.log_id_counts(collector.environment)
    report = delivery_report("poison events, requeued after the fix", [e["log_id"] for e in stream], counts,
                             fault="poison_events", ack_mode="durable", drain_seconds=time.monotonic() - requeued,
                             settings=collector.report_settings())
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    assert collector.dead_letters() == []
    wait_until(lambda: collector.pending_rows() == 0, timeout=30, message="the pending table to empty")


def test_pending_tools_show_and_deliver_what_waits_while_the_server_runs(collector_factory, opensearch):
    stalled = collector_factory(ACK_MODE="memory", OPEN_SEARCH_DNS="http://127.0.0.1:9", QUEUE_CAPACITY=1,
                                BULK_SIZE=1000, FLUSH_INTERVAL_SECONDS=3600, BULK_LINGER_SECONDS=3600)
    events = [event() for _ in range(50)]
    assert [stalled.post_event(e).json()["status"] for e in events].count("pending") == 49
    stats = cli(stalled, "pending", "stats")
    assert "pending rows       49" in stats
    assert "attempts histogram 0: 49" in stats

    # The server cannot reach OpenSearch; the tool, pointed at the real node, delivers now.
    stalled.env["OPEN_SEARCH_DNS"] = opensearch.url
    assert "49 shipped now; 0 still pending" in cli(stalled, "pending", "replay")
    counts = opensearch.log_id_counts(stalled.environment)
    # The first event is still in the server's buffer, waiting for its hour-long flush interval.
    assert set(counts) == {e["log_id"] for e in events[1:]}
    assert "pending rows       0" in cli(stalled, "pending", "stats")


def test_dead_letters_are_purged_by_age(collector, opensearch):
    index = index_name(collector.environment, time.time())
    opensearch.http.put(f"/{index}", json={"mappings": {"properties": {
        "event_info": {"properties": {"label": {"type": "long"}}}}}}).raise_for_status()
    collector.post_event(event(label="nan"))
    wait_until(lambda: len(collector.dead_letters()) == 1, timeout=30, message="one dead letter")
    assert "0 dead letters deleted" in cli(collector, "dead-letter", "purge", "--older-than", "1")
    assert "1 dead letters deleted" in cli(collector, "dead-letter", "purge")
    assert collector.dead_letters() == []
