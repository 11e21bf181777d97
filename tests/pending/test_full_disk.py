"""The pending store on a volume its backlog filled: the backlog drains and the operator reads its figures."""

import asyncio
import os
import subprocess
import sys
import time

import pytest
from support import Clock, fill_up, query, tmpfs

from event_collector.envelope import Envelope
from event_collector.exceptions import StoreError, StoreFull
from event_collector.pending import SqliteStore

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")

PADDING = b"x" * 1000
MIB = 1 << 20


def envelopes(count: int, start: int) -> list[Envelope]:
    return [Envelope("events_t_2026-11", f"id-{n}", b'{"n":%d,"pad":"%s"}' % (n, PADDING), time.time())
            for n in range(start, start + count)]


def fill_with_rows(database) -> int:
    """Add pending rows until the store fails for want of space; returns how many it kept."""

    async def write() -> int:
        store = SqliteStore(str(database))
        await store.open()
        kept = 0
        try:
            while True:
                await store.add(envelopes(50, kept), leased=False)
                kept += 50
        except StoreError as exc:
            assert "full" in str(exc), exc
        finally:
            await store.close()
        return kept

    return asyncio.run(write())


def test_pending_stats_reads_a_store_on_a_full_disk(tmp_path):
    with tmpfs(tmp_path / "volume", 4 * MIB) as volume:
        database = volume / "pending.db"
        kept = fill_with_rows(database)
        fill_up(volume)
        assert os.statvfs(volume).f_bavail == 0
        result = subprocess.run([sys.executable, "-m", "event_collector.cli", "pending", "stats"],
                                capture_output=True, text=True, cwd=tmp_path, timeout=60,
                                env={**os.environ, "DATABASE_URL": f"sqlite://{database}"})
    assert result.returncode == 0, result.stderr
    assert f"pending rows       {kept}" in result.stdout, result.stdout
    assert f"pending bytes      {sum(len(e.document) for e in envelopes(kept, 0))}" in result.stdout
    assert "disk reserve       missing" in result.stdout  # no room for PENDING_RESERVE_BYTES' 16 MiB here


async def test_a_backlog_that_filled_the_volume_drains_on_the_reserve_and_new_events_wait_for_space(tmp_path):
    clock = Clock(time.time())
    with tmpfs(tmp_path / "volume", 16 * MIB) as volume:
        database = volume / "pending.db"
        store = SqliteStore(str(database), reserve_bytes=5 * MIB, clock=clock)
        await store.open()
        try:
            store.check_room()  # makes the reserve
            kept = 0
            with pytest.raises(StoreError, match="full"):
                while True:
                    store.check_room()
                    await store.add(envelopes(50, kept), leased=False)
                    kept += 50
            assert kept > 1000

            # Claiming and deleting are writes: the first claim spends the reserve, and the backlog drains.
            drained = 0
            while claimed := await store.claim_due(100):
                await store.delivered(claimed)
                drained += len(claimed)
            assert drained == kept
            assert query(database, "SELECT count(*) FROM pending") == [(0,)]
            assert not os.path.exists(store.path + "-reserve")
            clock.now += 1
            with pytest.raises(StoreFull, match="PENDING_RESERVE_BYTES"):
                store.check_room()  # what the drain frees is the drain's

            # The drained file gives its pages back (a step writes a few pages, not its 2,048), and the
            # reserve is made again at the next check: new events are kept again.
            assert await store.reclaim_space() > 4 * MIB
            clock.now += 1
            store.check_room()
            assert os.path.exists(store.path + "-reserve")
            await store.add(envelopes(50, kept), leased=False)
        finally:
            await store.close()
