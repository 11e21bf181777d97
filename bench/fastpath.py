"""The fast path's effect, not part of `make bench` nor of CI: `.venv/bin/python bench/fastpath.py`.

Interleaved, BENCH_REPEATS rounds (3) of BENCH_SECONDS (10) each: `limit_http`, then `single[memory]` and
`single[durable]` in each variant, measured exactly as bench/run.py measures them (one pinned worker, wrk on
the other core). The variants are FAST_PATH on and off; with BENCH_BASELINE_SRC=<a src directory> (e.g. a
`git archive` of an older commit) they are this code and that one, both with the fast path on, so a change
is measured against what it changes on the same loaded machine. With SEED_BIN, each round also measures
`single[seed]`, the original Rust collector. Prints each figure, and per round and as medians, single /
limit_http, single / seed and CPU seconds per 10,000 requests (steadier than rates on a busy machine).
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

import knobs  # noqa: E402
import opensearch  # noqa: E402
import run  # noqa: E402
import servers  # noqa: E402
from load import wrk  # noqa: E402

BASELINE_SRC = os.environ.get("BENCH_BASELINE_SRC", "")


class FastPathBench(run.Bench):
    """bench/run.py's Bench with FAST_PATH, and the code the collector runs, set per variant."""

    fast_path = "true"
    src = ""

    def collector(self, mode: str, workers: int = 1, pinned: bool = False, **extra: Any) -> servers.Server:
        if self.src:
            # Found before the installed (editable) package: the collector runs that version's code.
            extra["PYTHONPATH"] = self.src
        return super().collector(mode, workers, pinned, FAST_PATH=self.fast_path, **extra)

    # limit_http and single[seed] with the server's CPU seconds per 10,000 requests, as single[...] has them:
    # on a loaded machine the rate of each figure follows its share of the core, its CPU per request does not.

    def limit_http(self) -> None:
        self._pinned_with_cpu("limit_http", self.limit_server("uvicorn"))

    def single_seed(self) -> None:
        self._pinned_with_cpu("single[seed]", self.seed(pinned=True))

    def _pinned_with_cpu(self, figure: str, server: servers.Server) -> None:
        try:
            cpu = server.cpu_seconds()
            with opensearch.opensearch_on_load_cpu():
                result = wrk(server.url, self.token, pinned=True)
            cpu = server.cpu_seconds() - cpu
            self.record(figure, **result,
                        cpu_seconds_per_10k=cpu / max(1, result["accepted_per_second"] * knobs.SECONDS) * 10_000)
        finally:
            server.stop()


def variants() -> list[tuple[str, str, str]]:
    """(name, FAST_PATH, src directory or "" for this one)."""
    if BASELINE_SRC:
        return [("this", "true", ""), ("baseline", "true", BASELINE_SRC)]
    return [("fast_path=true", "true", ""), ("fast_path=false", "false", "")]


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="event-collector-fastpath-"))
    bench = FastPathBench(workdir)
    ratios: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    try:
        for repeat in range(knobs.REPEATS):
            print(f"round {repeat + 1} of {knobs.REPEATS} ({knobs.SECONDS} s each)", flush=True)
            bench.limit_http()
            limit = bench.samples["limit_http"][-1]["accepted_per_second"]
            cpu.setdefault("limit_http", []).append(bench.samples["limit_http"][-1]["cpu_seconds_per_10k"])
            seed = None
            if knobs.SEED_BIN:
                bench.single_seed()
                seed = bench.samples["single[seed]"][-1]["accepted_per_second"]
                cpu.setdefault("single[seed]", []).append(bench.samples["single[seed]"][-1]["cpu_seconds_per_10k"])
                ratios.setdefault("single[seed] / limit_http", []).append(seed / limit)
            for mode in knobs.MODES:
                for variant, switch, src in variants():
                    bench.fast_path, bench.src = switch, src
                    accepted = bench.single(mode)
                    name = f"single[{mode}] {variant}"
                    cpu.setdefault(name, []).append(bench.samples[f"single[{mode}]"][-1]["cpu_seconds_per_10k"])
                    ratios.setdefault(f"{name} / limit_http", []).append(accepted / limit)
                    shown = f"    {name}: {accepted / limit:.2f} of limit_http"
                    if seed:
                        ratios.setdefault(f"{name} / seed", []).append(accepted / seed)
                        shown += f", {accepted / seed:.2f} of seed"
                    print(shown, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nratios, median (min .. max) of the rounds:")
    for name, values in ratios.items():
        print(f"  {name}: {statistics.median(values):.2f} ({min(values):.2f} .. {max(values):.2f})")
    print("CPU s per 10,000 requests, per round, and limit_http's over it (the ratio the rates would have on a "
          "core of their own):")
    for name, values in cpu.items():
        shown = ", ".join(f"{value:.2f}" for value in values)
        if name != "limit_http":
            shown += " (" + ", ".join(f"{limit / value:.2f}" for limit, value in zip(cpu["limit_http"], values)) + ")"
        print(f"  {name}: {shown}")
    limits = [sample["accepted_per_second"] for sample in bench.samples["limit_http"]]
    print(f"  limit_http req/s: median {statistics.median(limits):,.0f} ({min(limits):,.0f} .. {max(limits):,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
