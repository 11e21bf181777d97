"""A full disk while OpenSearch is down: nothing can progress, so nothing may spin or flood the log."""

import re
import resource
import time

from support import event, free_port, metric, wait_until


def test_a_full_disk_during_an_outage_costs_no_cpu_and_few_log_lines(collector_factory):
    # RLIMIT_FSIZE stands for the full disk: past 2 MB every write of the process's files fails (Python
    # ignores SIGXFSZ, so SQLite sees the error, as it would see ENOSPC). Nothing listens on the port.
    two_mb = 2 * 1024 * 1024
    collector = collector_factory(rlimits={resource.RLIMIT_FSIZE: (two_mb, two_mb)}, ACK_MODE="memory",
                                  OPEN_SEARCH_DNS=f"http://127.0.0.1:{free_port()}", BULK_SIZE=100)
    padding = "p" * 1000
    for _ in range(30):
        batch = [event(label="x", param={"padding": padding}) for _ in range(100)]
        assert collector.http.post("/events/batch", json=batch, headers=collector.auth()).status_code == 200
    # Every event has failed to ship at least once; 3,000 rows of 1 KB do not fit in the 2 MB.
    wait_until(lambda: metric(collector, "event_collector_events_retried_total") >= 3000, timeout=60,
               message="every event to have failed once")
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
    assert "pending store failed" in collector.log()


def log_records(collector) -> int:
    # Records, not lines: a traceback is one record over many lines.
    return len(re.findall(r"^\d{4}-\d\d-\d\d ", collector.log(), re.M))


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
