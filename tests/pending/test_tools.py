"""The operator's commands, run as the `event-collector` CLI on a real store file."""

import asyncio
import os
import sqlite3
import subprocess
import sys
import time

from support import free_port

from event_collector.envelope import Envelope
from event_collector.pending import Failure, SqliteStore


def cli(database, *args: str, opensearch_url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "event_collector.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "DATABASE_URL": f"sqlite://{database}", "OPEN_SEARCH_DNS": opensearch_url,
                               "OPEN_SEARCH_TIMEOUT_SECONDS": "5"},
                          cwd=database.parent, timeout=60)


def fill(database, count: int) -> None:
    async def write() -> None:
        store = SqliteStore(str(database))
        await store.open()
        envelopes = [Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d}' % n, time.time()) for n in range(count)]
        await store.add(envelopes[: count // 2], leased=False)
        # The other half waits out a backoff after an earlier failure.
        await store.retry_later([Failure(e, "429 busy") for e in envelopes[count // 2:]], count_attempt=True)
        await store.close()

    asyncio.run(write())


def pending_rows(database) -> list[tuple]:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT id, log_id, document, attempts, last_error, lease_owner FROM pending"
                                  " ORDER BY id").fetchall()


def test_pending_replay_stops_when_opensearch_is_unreachable_and_leaves_the_rows_as_they_were(tmp_path):
    database = tmp_path / "pending.db"
    fill(database, 20)
    before = pending_rows(database)
    result = cli(database, "pending", "replay", opensearch_url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "stopped" in result.stderr and "unreachable" in result.stderr, result.stderr
    assert "0 shipped now; 20 still pending" in result.stderr
    # Not rewritten (no attempt, no error of its own, no lease kept); due now, as the command asked.
    assert pending_rows(database) == before
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT max(next_attempt_at) FROM pending").fetchone() == (0,)
