"""An outage's backlog that filled the store's volume drains once OpenSearch is back, with the disk still full.

Issue 17, case 10: the rows waited, OpenSearch returned, and every replay failed at COMMIT with "database
or disk is full", because claiming rows is a write; nothing moved until space was freed by hand.
"""

import os
import time

import httpx
import pytest
from support import StallingProxy, assert_delivered_exactly_once, event, free_port, tmpfs, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")

VOLUME_BYTES = 20 << 20
RESERVE_BYTES = 5 << 20
PADDING = "p" * 4000
BATCH = 50


def free_bytes(directory) -> int:
    status = os.statvfs(directory)
    return status.f_bavail * status.f_frsize


@pytest.mark.parametrize("ack_mode, workers", [("memory", 1), ("durable", 1), ("durable", 2)])
def test_a_backlog_that_filled_the_disk_drains_with_the_disk_still_full(tmp_path, collector_factory, opensearch,
                                                                        ack_mode, workers):
    with tmpfs(tmp_path / "volume", VOLUME_BYTES) as volume:
        proxy = StallingProxy(free_port())  # leads nowhere: OpenSearch is unreachable
        try:
            collector = collector_factory(
                DATABASE=volume / "pending.db", ACK_MODE=ack_mode, OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}",
                SERVER_WORKERS=workers, QUEUE_CAPACITY=200, BULK_SIZE=100, BULK_WORKERS=2,
                PENDING_REPLAY_INTERVAL_SECONDS=0.5, PENDING_RESERVE_BYTES=RESERVE_BYTES)
            name = f"{ack_mode} mode, {workers} worker{'s' if workers > 1 else ''}"
            accepted, statuses = fill_until_refused(collector)
            # Every answer was a 2xx or a 503 with Retry-After, and the store took a backlog before it refused.
            assert set(statuses) <= {200, 503}, statuses
            assert statuses.get(503) and len(accepted) > 1000, statuses
            assert free_bytes(volume) < 256 * 1024, "the volume is not full"

            # OpenSearch answers again; nothing on the volume is freed by hand.
            proxy.upstream_port = int(opensearch.url.rsplit(":", 1)[1])
            returned = time.monotonic()
            wait_until(lambda: set(accepted) <= set(opensearch.log_id_counts(collector.environment)), timeout=60,
                       interval=0.5, message="the backlog indexed while the disk is still full")
            drained_seconds = time.monotonic() - returned
            assert_delivered_exactly_once(f"a backlog that filled the disk ({name})", accepted, opensearch,
                                          collector.environment, sent=sum(statuses.values()) * BATCH,
                                          drain_from=returned, fault="disk_full", ack_mode=ack_mode,
                                          settings=collector.report_settings("PENDING_RESERVE_BYTES"))
            # Its rows are gone too, not only delivered: the store has nothing left to send.
            wait_until(lambda: collector.pending_rows() == 0, timeout=30, message="the pending rows deleted")
            assert "back to it for the backlog to drain" in collector.log()  # the drain needed the space set aside
            print(f"{name}: {len(accepted)} events answered 2xx, {statuses.get(503)} batches refused; "
                  f"indexed {drained_seconds:.1f} s after OpenSearch returned")

            # Once the drained store gave its space back, a batch larger than the buffer is stored again.
            overflow = [event(label="after") for _ in range(250)]
            response = wait_until(lambda: stored(collector, overflow), timeout=30,
                                  interval=1, message="the store to take events again once space is back")
            assert response.json()["status"] == "pending"
            assert_delivered_exactly_once(f"events stored after the drain ({name})",
                                          accepted + [e["log_id"] for e in overflow], opensearch,
                                          collector.environment, fault="disk_full", ack_mode=ack_mode,
                                          settings=collector.report_settings("PENDING_RESERVE_BYTES"))
            collector.stop()
        finally:
            proxy.close()


def fill_until_refused(collector) -> tuple[list[str], dict[int, int]]:
    """Send batches until the collector refuses one for want of space, then one more, which must be refused
    too; returns the log_ids answered 2xx and how many batches got each status."""
    accepted: list[str] = []
    statuses: dict[int, int] = {}
    for _ in range(200):
        batch = [event(param={"padding": PADDING}) for _ in range(BATCH)]
        response = collector.http.post("/events/batch", json=batch, headers=collector.auth())
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code == 200:
            accepted += [e["log_id"] for e in batch]
        elif response.status_code == 503:
            assert "retry-after" in response.headers
            if statuses[503] == 2:
                return accepted, statuses
    raise AssertionError(f"the volume never filled: {statuses}")


def stored(collector, batch: list[dict]) -> httpx.Response | None:
    response = collector.http.post("/events/batch", json=batch, headers=collector.auth())
    assert response.status_code in (200, 503), response.text
    return response if response.status_code == 200 else None
