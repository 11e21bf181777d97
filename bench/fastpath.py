"""The fast path's effect, not part of `make bench` nor of CI: `.venv/bin/python bench/fastpath.py`.

Interleaved, BENCH_REPEATS rounds (3) of BENCH_SECONDS (10) each: `limit_http`, then `single[memory]` and
`single[durable]` with FAST_PATH on and off, measured exactly as bench/run.py measures them (one pinned
worker, wrk on the other core). Prints each figure and, per round and as medians, single / limit_http.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_SECONDS", "10")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402


class FastPathBench(run.Bench):
    """bench/run.py's Bench with FAST_PATH set on every collector it starts."""

    fast_path = "true"

    def collector(self, mode: str, workers: int = 1, pinned: bool = False, **extra: Any) -> run.Server:
        return super().collector(mode, workers, pinned, FAST_PATH=self.fast_path, **extra)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="event-collector-fastpath-"))
    bench = FastPathBench(workdir)
    ratios: dict[str, list[float]] = {}
    try:
        for repeat in range(run.REPEATS):
            print(f"round {repeat + 1} of {run.REPEATS} ({run.SECONDS} s each)", flush=True)
            bench.limit_http()
            limit = bench.samples["limit_http"][-1]["accepted_per_second"]
            for mode in run.MODES:
                for switch in ("true", "false"):
                    bench.fast_path = switch
                    accepted = bench.single(mode)
                    name = f"single[{mode}] fast_path={switch}"
                    ratios.setdefault(name, []).append(accepted / limit)
                    print(f"    {name}: {accepted / limit:.2f} of limit_http", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nsingle / limit_http (median, min, max):")
    for name, values in ratios.items():
        print(f"  {name}: {statistics.median(values):.2f} ({min(values):.2f} .. {max(values):.2f})")
    limits = [sample["accepted_per_second"] for sample in bench.samples["limit_http"]]
    print(f"  limit_http req/s: median {statistics.median(limits):,.0f} ({min(limits):,.0f} .. {max(limits):,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
