"""OpenSearch gone for minutes while load continues: events that merely wait are written once, nothing is
replayed into a dead cluster, and the backlog drains at once when it returns."""

import subprocess
import sys
import time

from support import REPO, Load, assert_delivered_exactly_once, metric, wait_until

OUTAGE_SECONDS = 120


def written_bytes(collector) -> int:
    """Bytes the collector process has caused to be written to storage so far."""
    for line in open(f"/proc/{collector.process.pid}/io"):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise AssertionError("no write_bytes in /proc/<pid>/io")


class Window:
    """Events accepted and bytes written by the collector from now until `close`."""

    def __init__(self, collector, load) -> None:
        self.collector, self.load = collector, load
        self.accepted_at_start, self.written_at_start = len(load.accepted), written_bytes(collector)
        self.accepted = 0

    def close(self) -> float:
        """Bytes written per event accepted in the window."""
        self.accepted = len(self.load.accepted) - self.accepted_at_start
        return (written_bytes(self.collector) - self.written_at_start) / max(1, self.accepted)


# Writes events one commit each into the pending table, as the collector does with each event that must
# wait, and prints the bytes written per event: what writing a waiting event once costs on this disk.
_WRITE_ONCE = """
import asyncio, sys
from event_collector.envelope import Envelope
from event_collector.pending import SqliteStore

def written():
    return int(next(line for line in open("/proc/self/io") if line.startswith("write_bytes:")).split()[1])

async def main():
    store = SqliteStore(sys.argv[1])
    await store.open()
    before = written()
    for n in range(2000):
        await store.add([Envelope("events_t_2026-11", f"id-{n}", b'{"pad":"%s"}' % (b"x" * 400), 1000.0 + n)],
                        leased=False)
    print((written() - before) / 2000)
    await store.close()

asyncio.run(main())
"""


def bytes_to_write_a_waiting_event_once(tmp_path) -> float:
    result = subprocess.run([sys.executable, "-c", _WRITE_ONCE, str(tmp_path / "reference.db")], check=True,
                            capture_output=True, text=True, env={"PYTHONPATH": str(REPO / "src")}, timeout=300)
    return float(result.stdout)


def keep_loading(load, seconds: float) -> None:
    """Let the load run for `seconds` (the scenario's length), checking on the way that it does run."""
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        progress = len(load.accepted)
        wait_until(lambda: len(load.accepted) > progress, timeout=30, message="the load to go on")
        time.sleep(min(5.0, max(0.0, ends - time.monotonic())))


def test_an_outage_of_two_minutes_under_load_writes_each_event_once_and_drains_at_once(collector_factory,
                                                                                       own_opensearch, tmp_path):
    collector = collector_factory(OPEN_SEARCH_DNS=own_opensearch.url, ACK_MODE="durable", QUEUE_CAPACITY=10000,
                                  BULK_SIZE=200, OPEN_SEARCH_TIMEOUT_SECONDS=5, PENDING_REPLAY_INTERVAL_SECONDS=3600)
    with Load(collector, clients=1) as load:
        wait_until(lambda: own_opensearch.client.count(collector.environment) >= 300, timeout=60,
                   message="delivery before the outage")
        # What the store writes for an event in normal operation (its journal record, docs/delivery.md).
        healthy = Window(collector, load)
        keep_loading(load, seconds=20)
        healthy_bytes_per_event = healthy.close()

        own_opensearch.stop()
        replayed_before = metric(collector, "event_collector_events_replayed_total")
        outage = Window(collector, load)
        keep_loading(load, seconds=OUTAGE_SECONDS)
        outage_bytes_per_event = outage.close()
        replayed_during = metric(collector, "event_collector_events_replayed_total") - replayed_before
    once = bytes_to_write_a_waiting_event_once(tmp_path)
    print(f"outage of {OUTAGE_SECONDS} s: {outage.accepted} events accepted, {outage_bytes_per_event:.0f} bytes "
          f"written an event (healthy: {healthy_bytes_per_event:.0f}; one pending row written once, alone: "
          f"{once:.0f}), {replayed_during:.0f} replayed")
    assert outage.accepted > 3000
    assert replayed_during == 0
    # An event that merely waits is written once, not again and again as rows are replayed into a dead
    # cluster and put back: its row in the `pending` table costs what writing such a row once costs on this
    # disk (measured beside, one commit per event as here with one client); a second write of each would
    # double it. Healthy delivery writes only the journal record, far less (docs/delivery.md, "Store layout").
    assert outage_bytes_per_event < 1.6 * once
    assert healthy_bytes_per_event < once

    own_opensearch.start()
    returned = time.monotonic()
    assert_delivered_exactly_once("OpenSearch down 2 minutes under load (durable)", load, own_opensearch.client,
                                  collector.environment, drain_from=returned, fault="opensearch_down",
                                  ack_mode="durable", settings=collector.report_settings("QUEUE_CAPACITY"))
    drained_seconds = time.monotonic() - returned
    print(f"backlog of {outage.accepted} events indexed {drained_seconds:.1f} s after OpenSearch returned")
    # At once and as fast as the buffer frees, not at the next replay interval (an hour here). The bound
    # leaves room for a slow shared machine.
    assert drained_seconds < 170
    wait_until(lambda: collector.pending_rows() == 0, timeout=60, message="the pending table to empty")
    assert metric(collector, "event_collector_events_delivered_total") == len(load.accepted)
