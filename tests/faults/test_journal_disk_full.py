"""A disk filled by the in-flight journal itself (issue 17, case 9): an 8 MiB volume, OpenSearch up, events
until the active segment, not yet at its 8 MiB roll, fills the disk. The collector answers 503 while it
cannot write, says why in /readyz, and takes events again by itself: the full segment rolls, and is
unlinked once its events are delivered."""

import pytest

from support import assert_delivered_exactly_once, event, tmpfs, wait_until


@pytest.fixture
def small_volume(tmp_path):
    with tmpfs(tmp_path / "volume", 8 << 20) as volume:
        yield volume


def test_a_disk_filled_by_the_journal_is_written_again_once_its_events_are_delivered(collector_factory, opensearch,
                                                                                     small_volume):
    # A reserve of 1 MiB (PENDING_RESERVE_BYTES) for draining a backlog: the volume has room for it twice over.
    collector = collector_factory(DATABASE=small_volume / "store.db", ACK_MODE="durable",
                                  PENDING_RESERVE_BYTES=1 << 20)
    padding = "p" * 700  # about 850 bytes an event, as the operations run sent
    accepted, refused, reasons = [], 0, []

    def send_batch() -> int:
        batch = [event(param={"padding": padding}) for _ in range(50)]
        response = collector.http.post("/events/batch", json=batch, headers=collector.auth())
        assert response.status_code in (200, 503), (response.status_code, response.text)
        if response.status_code == 200:
            accepted.extend(e["log_id"] for e in batch)
        return response.status_code

    while send_batch() == 200:
        assert len(accepted) < 20_000, "the 8 MiB volume never filled"
    refused += 1
    readiness = collector.http.get("/readyz")
    assert readiness.status_code == 503
    reasons = readiness.json()["reasons"]
    assert any("No space left on device" in reason for reason in reasons), reasons
    # Nothing is freed by hand: the collector must take events again by itself.
    answers = []
    wait_until(lambda: answers.append(send_batch()) or answers[-1] == 200, timeout=30, interval=0.2,
               message="a 2xx again on the full volume")
    for _ in range(20):  # and go on taking them: what it writes is unlinked once delivered
        assert send_batch() == 200
    print(f"{len(accepted)} events accepted, {answers.count(503) + refused} batches refused while the disk was full")
    assert_delivered_exactly_once("journal filled its disk", accepted, opensearch, collector.environment, fault="disk_full",
                                  ack_mode="durable", settings=collector.report_settings())
