"""Several worker processes: each runs the whole pipeline over the one shared pending store."""

import asyncio
import re
import signal

from support import event, send_all, wait_until


def test_two_workers_share_the_store_and_deliver_every_event_once(collector_factory, opensearch):
    collector = collector_factory(SERVER_WORKERS=2, ACK_MODE="durable", QUEUE_CAPACITY=400)
    events = [event() for _ in range(5000)]
    statuses = asyncio.run(send_all(collector.url, collector.token(), events, concurrency=16))
    assert statuses == [200] * len(events)
    assert len(re.findall(r"collector started: 5 shippers, buffer of 200", collector.log())) == 2
    assert collector.log().count("runs the store's janitor") == 1

    wait_until(lambda: opensearch.count(collector.environment) >= len(events), timeout=120, message="all indexed")
    counts = opensearch.log_id_counts(collector.environment)
    assert set(counts) == {e["log_id"] for e in events}
    assert set(counts.values()) == {1}
    metrics = collector.http.get("/metrics").text
    assert re.search(r'^event_collector_events_received_total\{outcome="(created|pending)"\} ', metrics, re.M)
    total = sum(float(n) for n in re.findall(
        r'^event_collector_events_received_total\{outcome="(?:created|pending)"\} ([0-9.e+]+)$', metrics, re.M))
    assert total == len(events)
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")
    assert collector.stop(signal.SIGTERM) == 0
