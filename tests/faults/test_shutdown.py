"""Graceful stops (SIGTERM): what the buffer holds is shipped, or stored for the next start."""

import asyncio
import signal

from support import delivery_report, event, send_all, wait_until


def test_sigterm_in_memory_mode_with_a_full_buffer_ships_everything(collector_factory, opensearch):
    # Shippers only wait here (huge batch, hour-long interval), so the buffer fills and SIGTERM must drain it.
    collector = collector_factory(ACK_MODE="memory", QUEUE_CAPACITY=2000, BULK_SIZE=100_000,
                                  FLUSH_INTERVAL_SECONDS=3600)
    events = [event() for _ in range(2000)]
    statuses = asyncio.run(send_all(collector.url, collector.token(), events))
    assert statuses == [200] * 2000
    assert collector.pending_rows() == 0
    assert opensearch.count(collector.environment) == 0

    assert collector.stop(signal.SIGTERM) == 0
    counts = opensearch.log_id_counts(collector.environment)
    report = delivery_report("SIGTERM, memory mode, full buffer", [e["log_id"] for e in events], counts)
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    assert set(counts) == {e["log_id"] for e in events}


def test_sigterm_while_opensearch_is_unreachable_stores_the_buffer_for_the_next_start(
        collector_factory, opensearch, tmp_path):
    database = tmp_path / "shared.db"
    unreachable = collector_factory(DATABASE=database, ACK_MODE="memory", OPEN_SEARCH_DNS="http://127.0.0.1:9",
                                    BULK_SIZE=100_000, FLUSH_INTERVAL_SECONDS=3600)
    events = [event() for _ in range(500)]
    assert {unreachable.post_event(e).json()["status"] for e in events} == {"created"}
    assert unreachable.stop(signal.SIGTERM) == 0
    assert unreachable.pending_rows() == 500

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=unreachable.environment)
    wait_until(lambda: opensearch.count(restarted.environment) == 500, timeout=60, message="500 replayed")
    assert set(opensearch.log_id_counts(restarted.environment).values()) == {1}
    wait_until(lambda: restarted.pending_rows() == 0, timeout=30, message="the pending table to empty")
