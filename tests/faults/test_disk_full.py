"""A full disk while OpenSearch is down: nothing can progress, so nothing may spin or flood the log."""

import re
import resource
import time

from support import StallingProxy, assert_delivered_exactly_once, event, free_port, wait_until


def test_a_full_disk_during_an_outage_costs_no_cpu_and_what_memory_holds_is_shipped_when_opensearch_returns(
        collector_factory, opensearch):
    # RLIMIT_FSIZE stands for the full disk: past 512 KB every write of the process's files fails (Python
    # ignores SIGXFSZ, so SQLite sees the error, as it would see ENOSPC). The proxy leads nowhere at first.
    limit = 512 * 1024
    proxy = StallingProxy(free_port())
    collector = collector_factory(rlimits={resource.RLIMIT_FSIZE: (limit, resource.RLIM_INFINITY)}, ACK_MODE="memory",
                                  OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}", QUEUE_CAPACITY=500, BULK_SIZE=100)
    padding = "p" * 1000
    in_memory, stored, refused = [], [], 0
    for _ in range(30):
        batch = [event(label="x", param={"padding": padding}) for _ in range(100)]
        response = collector.http.post("/events/batch", json=batch, headers=collector.auth())
        assert response.status_code in (200, 503)
        if response.status_code == 503:
            refused += 1
            assert "retry-after" in response.headers
        else:
            (in_memory if response.json()["status"] == "created" else stored).extend(e["log_id"] for e in batch)
    # The buffer and the senders hold what they can; once the store can take no overflow: 503, never lost.
    assert in_memory and refused
    wait_until(lambda: "delivery paused" in collector.log(), timeout=30, message="delivery to pause")
    cpu_before, log_before = collector.cpu_seconds(), log_records(collector)
    # Nothing is sent, delivered or stored from here on: measure what the process does on its own. The
    # window of idle time is the measurement itself, not a wait for something to happen.
    window_seconds = 5.0
    time.sleep(window_seconds)
    cpu_used = collector.cpu_seconds() - cpu_before
    logged = log_records(collector) - log_before
    print(f"idle outage with a full disk: {cpu_used:.2f} CPU s and {logged} log records in {window_seconds} s")
    assert cpu_used < 0.25 * window_seconds, f"{cpu_used:.2f} CPU s in {window_seconds} s idle"
    assert logged <= 10, collector.log()[-3000:]

    # OpenSearch answers again, the disk is still full: what memory holds is shipped all the same.
    proxy.upstream_port = int(opensearch.url.rsplit(":", 1)[1])
    try:
        wait_until(lambda: set(in_memory) <= set(opensearch.log_id_counts(collector.environment)), timeout=60,
                   message="the events held in memory indexed while the disk is still full")
        # Space again: what waited in the store follows.
        resource.prlimit(collector.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        assert_delivered_exactly_once("full disk during an outage (memory mode)", in_memory + stored, opensearch,
                                      collector.environment, sent=3000, fault="disk_full", ack_mode="memory",
                                      settings=collector.report_settings("QUEUE_CAPACITY"))
    finally:
        proxy.close()


def log_records(collector) -> int:
    # Records, not lines: a traceback is one record over many lines in the text format (one JSON line each).
    return len(re.findall(r"^(\d{4}-\d\d-\d\d |\{)", collector.log(), re.M))


def test_memory_mode_refuses_a_batch_whole_when_the_store_cannot_take_its_overflow(collector_factory, opensearch):
    # The buffer takes 50; the other 50 events of 8 KB must go to a store whose file may not pass 256 KB.
    limit = 256 * 1024
    collector = collector_factory(rlimits={resource.RLIMIT_FSIZE: (limit, limit)}, ACK_MODE="memory",
                                  QUEUE_CAPACITY=50)
    batch = [event(param={"padding": "p" * 8000}) for _ in range(100)]
    response = collector.http.post("/events/batch", json=batch, headers=collector.auth())
    assert response.status_code == 503 and "retry-after" in response.headers

    marker = event()
    assert collector.post_event(marker).status_code == 200
    wait_until(lambda: marker["log_id"] in opensearch.log_id_counts(collector.environment), timeout=60,
               message="an event sent afterwards indexed")
    indexed = set(opensearch.log_id_counts(collector.environment))
    assert not indexed & {e["log_id"] for e in batch}, "part of a batch answered 503 was delivered"
