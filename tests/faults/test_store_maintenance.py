"""Retention over a large store while durable load runs: no refusal, no live owner taken over."""

import asyncio
import sqlite3
import threading
import time

import httpx
from support import Load, assert_delivered_exactly_once, event, metric, wait_until

from event_collector.pending import SqliteStore

OLD_ROWS = 500_000
DAY = 86_400
EXPIRE_AFTER_START_SECONDS = 8


def build_store_of_old_rows(path, count: int, received_at: float) -> None:
    """A store in the collector's own schema holding `count` undelivered rows received at `received_at`,
    each waiting out a backoff (so the replayer leaves them to retention). Made in one statement: a
    Python loop would take three times as long."""

    async def create_schema() -> None:
        store = SqliteStore(str(path))
        await store.open()
        await store.close()

    asyncio.run(create_schema())
    document = ('{"log_id":"old-%d","user_id":"u","device_uuid":null,"app_version":"2.4.1","os_version":"iOS 18.1",'
                '"user_agent":"ExampleApp/2.4.1","event_info":{"page":"/home","event":"click","label":null,'
                '"target":null,"section":null,"param":{"price":"1200"}},"received_at":"2026-11-20T09:15:02.123Z"}')
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO pending (log_id, index_name, document, received_at, attempts, next_attempt_at, last_error)"
            " WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ? - 1)"
            " SELECT 'old-' || i, 'events_old_2026-11', CAST(printf(?, i) AS BLOB), ?, 1, ?, '503 busy' FROM n",
            (count, document, received_at, time.time() + DAY))
    connection.close()


class LatencyProbe:
    """One client sending events one after the other, noting how long each answer took."""

    def __init__(self, collector) -> None:
        self.collector = collector
        self.accepted: list[str] = []
        self.slowest_seconds = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> "LatencyProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join(60)

    def _send(self) -> None:
        with httpx.Client(base_url=self.collector.url, timeout=60, headers=self.collector.auth()) as http:
            while not self._stopping.is_set():
                sent = event()
                started = time.monotonic()
                response = http.post("/events", json=sent)
                self.slowest_seconds = max(self.slowest_seconds, time.monotonic() - started)
                if response.status_code == 200:
                    self.accepted.append(sent["log_id"])


def count(path, table: str) -> int:
    with sqlite3.connect(path, timeout=30) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_retention_over_half_a_million_rows_under_durable_load(collector_factory, opensearch, tmp_path):
    database = tmp_path / "large.db"
    received_at = time.time() - 8 * DAY
    build_store_of_old_rows(database, OLD_ROWS, received_at)
    # The rows pass the retention a few seconds after the start, once the load runs.
    retention_days = (time.time() + EXPIRE_AFTER_START_SECONDS - received_at) / DAY
    collector = collector_factory(DATABASE=database, ACK_MODE="durable", JANITOR_INTERVAL_SECONDS=1,
                                  PENDING_OWNER_TIMEOUT_SECONDS=2, PENDING_RETENTION_DAYS=f"{retention_days:.9f}")
    with Load(collector, clients=2) as load, LatencyProbe(collector) as probe:
        wait_until(lambda: len(load.accepted) >= 200, timeout=30, message="the load to get going")
        expired_when_load_began = count(database, "dead_letter")
        accepted_before, started = len(load.accepted), time.monotonic()
        wait_until(lambda: count(database, "dead_letter") >= OLD_ROWS, timeout=150, interval=0.5,
                   message=f"{OLD_ROWS} old rows to expire")
        accepted_during_retention, retention_seconds = len(load.accepted), time.monotonic() - started
        wait_until(lambda: len(load.accepted) >= accepted_during_retention + 200, timeout=30,
                   message="the load to go on after retention")
    rate = (accepted_during_retention - accepted_before) / retention_seconds
    print(f"retention of {OLD_ROWS} rows under load: {expired_when_load_began} expired before the load began, the "
          f"rest in {retention_seconds:.1f} s while {rate:.0f} events/s were accepted; statuses {load.statuses}; "
          f"slowest answer {probe.slowest_seconds:.2f} s")
    assert expired_when_load_began < OLD_ROWS  # the load ran while the janitor worked
    assert load.statuses.keys() == {200}, load.statuses  # no 503, no request that timed out
    # No durable write waits for the whole retention: it holds the lock a chunk at a time.
    assert probe.slowest_seconds < 2.0
    assert count(database, "dead_letter") == OLD_ROWS
    accepted = load.accepted + probe.accepted
    assert_delivered_exactly_once("retention of 500,000 rows under load", accepted, opensearch, collector.environment,
                                  fault="store_upkeep", ack_mode="durable", settings=collector.report_settings(),
                                  sent=load.sent + len(probe.accepted))
    # Nobody took over a live process's rows: each event was shipped once, none a second time (409).
    wait_until(lambda: metric(collector, "event_collector_events_delivered_total") >= len(accepted), timeout=30,
               message="the delivered counter to catch up")
    assert metric(collector, "event_collector_events_delivered_total") == len(accepted)
    assert "moved to dead-letter as expired" in collector.log()
