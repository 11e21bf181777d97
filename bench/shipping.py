"""Shipping figures only: `end_to_end` and `limit_opensearch` from bench/run.py, interleaved, per variant.

Not `make bench`: a short look at how well the collector keeps OpenSearch busy, for tuning the shipper
(docs/delivery.md, "Keeping OpenSearch busy"). Each round runs `end_to_end[memory]` once per variant, then
`limit_opensearch`; ratios are taken within a round because the machine is shared. Besides events/s it
reports the collector's CPU seconds per 10,000 delivered events and OpenSearch's, which vary less than
rates on a busy machine.

  BENCH_E2E_EVENTS   events per end_to_end run (as in run.py)
  BENCH_REPEATS      rounds (as in run.py)
  BENCH_VARIANTS     `name:KEY=VALUE,KEY=VALUE;name2:...`: collector settings of each variant
                     (default one variant, `default`, with the collector's defaults)
  BENCH_MODE         ack mode of end_to_end (memory)

Usage: .venv/bin/python bench/shipping.py
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import knobs  # noqa: E402
import run  # noqa: E402


def variants() -> dict[str, dict[str, str]]:
    text = os.environ.get("BENCH_VARIANTS", "default:")
    found = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, settings = part.partition(":")
        found[name] = dict(item.split("=", 1) for item in settings.split(",") if item)
    return found


def opensearch_cpu_seconds() -> float:
    """CPU seconds so far of the OpenSearch node at OPEN_SEARCH_DNS's port, when it runs on this machine (else 0).
    Other JVMs on the machine (nodes that tests start) are left out."""
    port = knobs.OPENSEARCH.rsplit(":", 1)[-1].strip("/")
    found = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    match = re.search(r"pid=(\d+)", found.stdout)
    if not match:
        return 0.0
    fields = Path(f"/proc/{match.group(1)}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="event-collector-shipping-"))
    bench = run.Bench(workdir)
    mode = os.environ.get("BENCH_MODE", "memory")
    chosen = variants()
    ratios: dict[str, list[float]] = {name: [] for name in chosen}
    try:
        for repeat in range(knobs.REPEATS):
            print(f"round {repeat + 1} of {knobs.REPEATS}", flush=True)
            rates = {}
            for name, settings in chosen.items():
                saved = {key: os.environ.get(key) for key in settings}
                os.environ.update(settings)  # Bench.collector passes os.environ on to the server
                try:
                    jvm = opensearch_cpu_seconds()
                    bench.end_to_end(mode)
                    jvm = opensearch_cpu_seconds() - jvm
                except Exception as exc:  # the shared node timed out answering the bench: lose this figure only
                    print(f"  end_to_end {name} failed ({exc!r})", flush=True)
                    continue
                finally:
                    for key, value in saved.items():
                        if value is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = value
                sample = bench.samples[f"end_to_end[{mode}]"].pop()
                sample["opensearch_cpu_seconds_per_10k"] = jvm / knobs.E2E_EVENTS * 10_000
                bench.record(f"end_to_end[{mode}] {name}", **sample)
                rates[name] = sample["events_per_second"]
            jvm = opensearch_cpu_seconds()
            try:
                bench.limit_opensearch()
            except Exception as exc:  # an overloaded shared node times out now and then: lose the round only
                print(f"  limit_opensearch failed ({exc!r}): no ratio this round", flush=True)
                continue
            limit = bench.samples["limit_opensearch"][-1]["events_per_second"]
            print(f"  limit_opensearch: OpenSearch CPU s per 10k (probes included) "
                  f"{(opensearch_cpu_seconds() - jvm) / (knobs.E2E_EVENTS * 1.6) * 10_000:.2f}", flush=True)
            for name, rate in rates.items():
                ratios[name].append(rate / limit)
                print(f"  ratio {name}: {rate / limit:.2f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("summary (median of rounds):")
    for name, values in ratios.items():
        samples = bench.samples.get(f"end_to_end[{mode}] {name}")
        if not values or not samples:
            print(f"  {name}: no complete round")
            continue
        cpu = statistics.median(s["cpu_seconds_per_10k"] for s in samples)
        print(f"  {name}: end_to_end / limit_opensearch {statistics.median(values):.2f} "
              f"(rounds: {', '.join(f'{v:.2f}' for v in values)}), collector CPU s per 10k {cpu:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
