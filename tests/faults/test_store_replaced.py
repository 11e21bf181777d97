"""The store's files deleted under a running durable collector during an outage: nothing answered 2xx is lost."""

import os

from support import assert_delivered_exactly_once, event, free_port, metric, wait_until


def test_deleting_the_store_under_a_running_collector_loses_nothing(collector_factory, opensearch, tmp_path):
    database = tmp_path / "pending.db"
    # OpenSearch unreachable: every acknowledged event waits in memory and in the store.
    # The janitor reads the store every second here: the events in flight are in the journal, not in the
    # file, so its next read is what notices the deletion.
    stranded = collector_factory(DATABASE=database, ACK_MODE="durable", JANITOR_INTERVAL_SECONDS=1,
                                 OPEN_SEARCH_DNS=f"http://127.0.0.1:{free_port()}")
    before = [event() for _ in range(200)]
    assert {stranded.post_event(e).status_code for e in before} == {200}
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
                                  restarted.environment, sent=len(before) + len(after))
    wait_until(lambda: restarted.pending_rows() == 0, timeout=60, message="the pending table to empty")
    # Said loudly: a metric and an error in the log.
    assert noticed == 1
    assert "was deleted or replaced while in use" in stranded.log()
