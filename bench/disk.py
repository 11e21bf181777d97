"""Durable mode's bytes written to disk per accepted event, alone: `.venv/bin/python bench/disk.py`.

Not part of `make bench` nor of CI. Runs bench/run.py's `delivery[durable]@350` figure (single events at
350/s for BENCH_SECONDS, 20 by default; /proc/PID/io write_bytes of the server's processes, read once every
document is searchable) BENCH_REPEATS times (1 by default), and with BENCH_SINGLE=1 also `single[durable]`
(one pinned worker, wrk on the other core) for its accept rate and CPU s per 10,000 events. To measure
another checkout's code, put its `src` first: `PYTHONPATH=/path/to/checkout/src .venv/bin/python bench/disk.py`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("BENCH_REPEATS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import knobs  # noqa: E402
import run  # noqa: E402


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="event-collector-disk-"))
    bench = run.Bench(workdir)
    try:
        for repeat in range(knobs.REPEATS):
            print(f"round {repeat + 1} of {knobs.REPEATS} ({knobs.SECONDS} s each)", flush=True)
            bench.delivery("durable", knobs.DISK_RATE)
            if os.environ.get("BENCH_SINGLE") == "1":
                bench.single("durable")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
