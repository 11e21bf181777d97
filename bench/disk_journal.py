"""Bytes written per accepted event by durable mode's store, through `SqliteStore` itself, without a server.

3,000 events with a 590-byte document, one `add` each (one event per commit or journal write, as at 350
events/s), delivered 40 at a time (a bulk's worth); `write_bytes` of `/proc/self/io` before and after, for
`SQLITE_SYNCHRONOUS` NORMAL and FULL. Deterministic: no timing is involved, so a loaded machine gives the
same figures.

    .venv/bin/python bench/disk_journal.py                 # this checkout
    BENCH_SRC=/path/to/other/src .venv/bin/python bench/disk_journal.py   # another version's code
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

if os.environ.get("BENCH_SRC"):
    sys.path.insert(0, os.environ["BENCH_SRC"])

from event_collector.envelope import Envelope  # noqa: E402
from event_collector.pending import SqliteStore  # noqa: E402

EVENTS = 3_000
BULK = 40
DOCUMENT = b'{"pad":"%s"}' % (b"x" * 580)


def written_bytes() -> int:
    with open("/proc/self/io") as io:
        return int(next(line for line in io if line.startswith("write_bytes:")).split()[1])


async def bytes_per_event(directory: Path, synchronous: str) -> float:
    store = SqliteStore(str(directory / f"pending-{synchronous}.db"), synchronous=synchronous)
    await store.open()
    try:
        before = written_bytes()
        held: list[Envelope] = []
        for n in range(EVENTS):
            one = [Envelope("events_t_2026-11", f"id-{n}", DOCUMENT, 1000.0 + n)]
            await store.add(one, leased=True)
            held += one
            if len(held) == BULK:
                await store.delivered(held)
                held = []
        return (written_bytes() - before) / EVENTS
    finally:
        await store.close()


def main() -> None:
    # On the project's disk, not a tmpfs: write_bytes counts only what goes to a block device.
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as directory:
        for synchronous in ("NORMAL", "FULL"):
            figure = asyncio.run(bytes_per_event(Path(directory), synchronous))
            print(f"SQLITE_SYNCHRONOUS={synchronous}: {figure:,.0f} bytes written per event "
                  f"(document {len(DOCUMENT)} bytes)")


if __name__ == "__main__":
    main()
