"""Graceful stops (SIGTERM): what the buffer holds is shipped, or stored for the next start."""

import asyncio
import resource
import signal
import socket
import time

from support import (OPENSEARCH_URL, StallingProxy, delivery_report, event, free_port, send_all,
                     wait_until)


def test_sigterm_in_memory_mode_with_a_full_buffer_ships_everything(collector_factory, opensearch):
    # Shippers only wait here (huge batch, hour-long interval), so the buffer fills and SIGTERM must drain it.
    collector = collector_factory(ACK_MODE="memory", QUEUE_CAPACITY=2000, BULK_SIZE=100_000,
                                  FLUSH_INTERVAL_SECONDS=3600, BULK_LINGER_SECONDS=3600)
    events = [event() for _ in range(2000)]
    statuses = asyncio.run(send_all(collector.url, collector.token(), events))
    assert statuses == [200] * 2000
    assert collector.pending_rows() == 0
    assert opensearch.count(collector.environment) == 0

    stopping = time.monotonic()
    assert collector.stop(signal.SIGTERM) == 0
    stopped = time.monotonic()
    counts = opensearch.log_id_counts(collector.environment)
    report = delivery_report("SIGTERM, memory mode, full buffer", [e["log_id"] for e in events], counts,
                             fault="graceful_stop", ack_mode="memory", drain_seconds=stopped - stopping,
                             settings=collector.report_settings("QUEUE_CAPACITY"))
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    assert set(counts) == {e["log_id"] for e in events}


def test_sigterm_while_opensearch_is_unreachable_stores_the_buffer_for_the_next_start(
        collector_factory, opensearch, tmp_path):
    database = tmp_path / "shared.db"
    unreachable = collector_factory(DATABASE=database, ACK_MODE="memory", OPEN_SEARCH_DNS="http://127.0.0.1:9",
                                    BULK_SIZE=100_000, FLUSH_INTERVAL_SECONDS=3600, BULK_LINGER_SECONDS=3600)
    events = [event() for _ in range(500)]
    assert {unreachable.post_event(e).json()["status"] for e in events} == {"created"}
    assert unreachable.stop(signal.SIGTERM) == 0
    assert unreachable.pending_rows() == 500

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=unreachable.environment)
    wait_until(lambda: opensearch.count(restarted.environment) == 500, timeout=60, message="500 replayed")
    assert set(opensearch.log_id_counts(restarted.environment).values()) == {1}
    wait_until(lambda: restarted.pending_rows() == 0, timeout=30, message="the pending table to empty")


def test_the_whole_stop_keeps_within_one_grace_period(collector_factory, opensearch):
    # Bulk requests hang (the proxy forwards nothing) and a client is stuck mid-body: both the wait for
    # requests in progress and the drain would take the whole grace if each had its own.
    proxy = StallingProxy(int(OPENSEARCH_URL.rsplit(":", 1)[1]))
    try:
        collector = collector_factory(ACK_MODE="memory", OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}",
                                      OPEN_SEARCH_TIMEOUT_SECONDS=300, SHUTDOWN_GRACE_SECONDS=4, BULK_SIZE=50)
        wait_until(lambda: "index template" in collector.log(), message="the template installed")
        proxy.forwarding.clear()
        events = [event() for _ in range(200)]
        assert {collector.post_event(e).status_code for e in events} == {200}
        with socket.create_connection(("127.0.0.1", collector.port)) as stuck:
            stuck.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + collector.token().encode()
                          + b"\r\nContent-Length: 100\r\n\r\n{")
            started = time.monotonic()
            exit_code = collector.stop(signal.SIGTERM)
            took = time.monotonic() - started
        print(f"stop with hung bulks and a stuck client: {took:.1f} s for a grace of 4 s")
        assert took < 4 + 2.5
        assert exit_code == 0
        assert collector.pending_rows() == 200
    finally:
        proxy.close()


def test_a_stop_that_cannot_keep_what_memory_holds_exits_non_zero(collector_factory):
    # Memory mode, OpenSearch unreachable and a store that cannot grow: at the stop the buffer has nowhere
    # to go. The loss is logged, and the exit code tells the supervisor.
    limit = 256 * 1024
    collector = collector_factory(rlimits={resource.RLIMIT_FSIZE: (limit, limit)}, ACK_MODE="memory",
                                  OPEN_SEARCH_DNS=f"http://127.0.0.1:{free_port()}", SHUTDOWN_GRACE_SECONDS=1)
    batch = [event(param={"padding": "p" * 2000}) for _ in range(300)]
    assert collector.http.post("/events/batch", json=batch, headers=collector.auth()).status_code == 200
    assert collector.stop(signal.SIGTERM) != 0
    assert "LOST" in collector.log()
