"""The store's files deleted under a running durable collector during an outage: nothing answered 2xx is lost."""

import os
import signal

from support import assert_delivered_exactly_once, event, free_port, metric, wait_until


def stranded_with_events(collector_factory, database, count: int, **settings):
    """A durable collector whose OpenSearch is unreachable, and `count` events it answered 200."""
    stranded = collector_factory(DATABASE=database, ACK_MODE="durable",
                                 OPEN_SEARCH_DNS=f"http://127.0.0.1:{free_port()}", **settings)
    accepted = [event() for _ in range(count)]
    assert {stranded.post_event(e).status_code for e in accepted} == {200}
    return stranded, accepted


def test_deleting_the_store_under_a_running_collector_loses_nothing(collector_factory, opensearch, tmp_path):
    database = tmp_path / "pending.db"
    # OpenSearch unreachable: every acknowledged event waits in memory and in the store.
    # The janitor reads the store every second here: the events in flight are in the journal, not in the
    # file, so its next read is what notices the deletion.
    stranded, before = stranded_with_events(collector_factory, database, 200, JANITOR_INTERVAL_SECONDS=1)
    for suffix in ("", "-wal", "-shm"):  # what `rm pending.db*` does
        os.remove(f"{database}{suffix}")
    after = [event() for _ in range(100)]
    statuses = [stranded.post_event(e).status_code for e in after]
    assert set(statuses) <= {200, 503}, statuses
    noticed = wait_until(lambda: metric(stranded, "event_collector_store_replaced_total"), timeout=30,
                         message="the deleted store to be noticed")
    assert stranded.stop() == 0

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=stranded.environment)
    acknowledged = [e["log_id"] for e in before] + [e["log_id"] for e, s in zip(after, statuses) if s == 200]
    assert_delivered_exactly_once("store files deleted under a running collector", acknowledged, opensearch,
                                  restarted.environment, sent=len(before) + len(after), fault="store_files_lost",
                                  ack_mode="durable", settings=stranded.report_settings())
    wait_until(lambda: restarted.pending_rows() == 0, timeout=60, message="the pending table to empty")
    # Said loudly: a metric and an error in the log.
    assert noticed == 1
    assert "was deleted or replaced while in use" in stranded.log()


def test_a_store_deleted_while_no_traffic_comes_is_made_again_before_a_kill_9(collector_factory, opensearch, tmp_path):
    database = tmp_path / "pending.db"
    # A small buffer: most events overflow into the store's file; OpenSearch unreachable, so no replay runs
    # and nothing else reads the store (the janitor's default interval is five minutes).
    stranded, accepted = stranded_with_events(collector_factory, database, 200, QUEUE_CAPACITY=50,
                                              JANITOR_INTERVAL_SECONDS=300)
    for suffix in ("", "-wal", "-shm"):
        os.remove(f"{database}{suffix}")
    wait_until(lambda: metric(stranded, "event_collector_store_replaced_total"), timeout=10,
               message="the deleted store to be noticed with no traffic")
    stranded.stop(signal.SIGKILL)

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=stranded.environment)
    assert_delivered_exactly_once("store files deleted, no traffic, kill -9", [e["log_id"] for e in accepted],
                                  opensearch, restarted.environment, fault="store_files_lost", ack_mode="durable",
                                  settings=stranded.report_settings("QUEUE_CAPACITY"))


def test_after_the_write_ahead_log_is_deleted_every_commit_is_copied_into_the_store(collector_factory, opensearch,
                                                                                   tmp_path):
    database = tmp_path / "pending.db"
    stranded, before = stranded_with_events(collector_factory, database, 200, QUEUE_CAPACITY=50)
    os.remove(f"{database}-wal")  # committed rows not yet copied into the file are only there
    # Noticed within half a second: what the deleted log holds is copied into the file, and every commit after
    # it is copied at once, before its answer.
    wait_until(lambda: "write-ahead log was deleted" in stranded.log(), timeout=10,
               message="the deleted log to be noticed")
    after = [event() for _ in range(100)]
    assert {stranded.post_event(e).status_code for e in after} == {200}
    stranded.stop(signal.SIGKILL)

    restarted = collector_factory(DATABASE=database, SERVER_ENVIRONMENT=stranded.environment)
    assert_delivered_exactly_once("store's write-ahead log deleted, kill -9", [e["log_id"] for e in before + after],
                                  opensearch, restarted.environment, fault="store_files_lost", ack_mode="durable",
                                  settings=stranded.report_settings("QUEUE_CAPACITY"))
