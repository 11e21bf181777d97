"""OpenSearch going away under load: events wait in the pending store and arrive exactly once."""

from support import Load, wait_until


def test_opensearch_stopped_under_load_then_restarted_indexes_everything_once(collector_factory, own_opensearch):
    # Memory mode: during the outage the senders hold their batches and the buffer fills; only what
    # overflows it reaches the pending table.
    collector = collector_factory(ACK_MODE="memory", OPEN_SEARCH_DNS=own_opensearch.url, OPEN_SEARCH_TIMEOUT_SECONDS=5,
                                  QUEUE_CAPACITY=200, BULK_SIZE=50, BULK_WORKERS=2)
    with Load(collector, clients=1) as load:
        wait_until(lambda: len(load.accepted) >= 300, message="300 events before the outage")
        own_opensearch.stop()
        during_outage = len(load.accepted)
        wait_until(lambda: collector.pending_rows() >= 300 and len(load.accepted) >= during_outage + 300,
                   timeout=60, message="events piling up in the pending store")
        own_opensearch.start()
        wait_until(lambda: len(load.accepted) >= during_outage + 600, message="more events after the restart")

    accepted = set(load.accepted)
    wait_until(lambda: own_opensearch.client.count(collector.environment) >= len(accepted), timeout=120,
               message=f"{len(accepted)} events indexed")
    counts = own_opensearch.client.log_id_counts(collector.environment)
    assert set(counts) == accepted
    assert set(counts.values()) == {1}
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")
    assert collector.dead_letters() == []
