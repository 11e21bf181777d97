"""OpenSearch going away under load: events wait in the pending store and arrive exactly once."""

import threading

from support import event, wait_until


class Sender(threading.Thread):
    """Sends events one after another until stopped; remembers what was answered 200."""

    def __init__(self, collector) -> None:
        super().__init__(daemon=True)
        self.collector = collector
        self.accepted: list[str] = []
        self.statuses: dict[str, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            sent = event()
            response = self.collector.post_event(sent)
            if response.status_code == 200:
                self.accepted.append(sent["log_id"])
                status = response.json()["status"]
                self.statuses[status] = self.statuses.get(status, 0) + 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def test_opensearch_stopped_under_load_then_restarted_indexes_everything_once(collector_factory, own_opensearch):
    collector = collector_factory(OPEN_SEARCH_DNS=own_opensearch.url, OPEN_SEARCH_TIMEOUT_SECONDS=5)
    sender = Sender(collector)
    sender.start()
    try:
        wait_until(lambda: len(sender.accepted) >= 300, message="300 events before the outage")
        own_opensearch.stop()
        during_outage = len(sender.accepted)
        wait_until(lambda: collector.pending_rows() >= 300 and len(sender.accepted) >= during_outage + 300,
                   timeout=60, message="events piling up in the pending store")
        own_opensearch.start()
        wait_until(lambda: len(sender.accepted) >= during_outage + 600, message="more events after the restart")
    finally:
        sender.stop()

    accepted = set(sender.accepted)
    wait_until(lambda: own_opensearch.client.count(collector.environment) >= len(accepted), timeout=120,
               message=f"{len(accepted)} events indexed")
    counts = own_opensearch.client.log_id_counts(collector.environment)
    assert set(counts) == accepted
    assert set(counts.values()) == {1}
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")
    assert collector.dead_letters() == []
