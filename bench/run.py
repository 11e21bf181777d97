"""`make bench`: the collector measured against limits measured in the same run, on the same machine.

Figures (each measured BENCH_REPEATS times, interleaved, reported as median with min and max):
  limit_http[raw]   an httptools protocol on uvloop that answers 200 without ASGI: the fast path's ceiling
  limit_http[uvicorn] a bare uvicorn ASGI app (httptools, uvloop) that answers 200
  single            POST /events, one event per request, one worker, 64 connections (wrk)
  single_all_cores  the same on SERVER_WORKERS = CPU count
  latency           p50/p99 at a fixed rate of half of `single` (oha paces its requests)
  batch             POST /events/batch, 100 events per request (wrk)
  track, track_batch `single` and `batch` through the tracking API: POST /v1/track, and /v1/batch of 100
  end_to_end        BENCH_E2E_EVENTS pushed as fast as taken: first accept to last document searchable
  limit_opensearch  the same documents bulk-indexed straight into OpenSearch by a tight client
  rss_full_buffer   the collector's RSS holding a full 100,000-event buffer
  seed              with SEED_BIN (a build of the original Rust collector, scripts/build-seed): `single` pinned
                    as above, and `searchable` (whole machine, one event per request for SECONDS: documents
                    that became searchable per second during the load) for it and for this collector's modes
  delivery          at a fixed rate (BENCH_DELIVERY_RATE, 2,000/s; and 350/s): time from a 2xx to the document
                    being searchable (p50/p99), and bytes the collector wrote to disk per accepted event
  enrichment        CPU µs to decode, enrich and encode one event, each enrichment off and on (bench/enrichment.py)
  rules             CPU µs per event through the fast path with a 50-event RULES_FILE and every transform on,
                    against no rules (bench/rules.py; target: at most 20 µs more)
  receipts          POST /v1/receipts for 1 and for 1,000 indexed ids: latency and the collector's CPU per request
  single[kafka]     `single` in ACK_MODE=kafka, pinned as above, against a one-broker scripts/kafka-dev (its JVM on
                    the load tool's CPU) and a 3-partition topic: each 2xx waits for the broker's acknowledgement
  end_to_end[kafka] `end_to_end` through that broker: kafka-mode collectors (a worker per CPU), a topic of a partition
                    per CPU and an `event-collector index` per CPU; first accept to last document searchable
Collector figures are taken in both ack modes. The one-worker HTTP figures (limit_http, single, latency)
pin the server to CPU 0 and the load tool and OpenSearch to CPU 1, so both sides of each ratio get one
core of their own; the other figures use the whole machine. wrk sends requests built before the load starts
(bench/wrk/events.lua) and its own CPU is measured (bench/generator.py): a round where it was saturated is
left out, and a figure with no round left is reported as invalid. Results: a table on stdout,
bench/results/latest.json, latest.md (the tables of RESULTS.md) and latest.png; a full run also writes them into
RESULTS.md (between its markers), RESULTS.json and RESULTS.png.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from figures_checks import CheckFigures
from figures_delivery import DeliveryFigures
from figures_http import HttpFigures
from figures_kafka import KafkaFigures
from knobs import (BENCH, CONNECTIONS, DELIVERY_RATE, DISK_RATE, E2E_EVENTS, KAFKA, MODES, ONLY, REPEATS, RESULTS,
                   SECONDS, SEED_BIN)
from report import markdown, summarise, table, targets


class Bench(HttpFigures, DeliveryFigures, KafkaFigures, CheckFigures):
    """Every figure of the run (bench/figures_*.py), on the servers and samples of bench/harness.py."""

    def enrichment(self) -> None:
        from enrichment import measure

        self.record("enrichment", **measure())


def main() -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="event-collector-bench-"))
    bench = Bench(workdir)
    try:
        for repeat in range(REPEATS):
            print(f"round {repeat + 1} of {REPEATS}", flush=True)
            if ONLY in ("single[kafka]", "kafka"):
                bench.single_kafka()
                continue
            bench.limit_http("raw")
            bench.limit_http("uvicorn")
            if ONLY == "http":
                # The pinned one-worker figures alone: the ceilings, the original and both modes.
                if SEED_BIN:
                    bench.single_seed()
                for mode in MODES:
                    bench.single(mode)
                continue
            if SEED_BIN:
                bench.single_seed()
                bench.searchable("seed")
                for mode in MODES:
                    bench.searchable(mode)
            for mode in MODES:
                single = bench.single(mode)
                bench.single(mode, workers=os.cpu_count() or 1)
                bench.latency(mode, rate=single / 2)
                bench.batch(mode)
                bench.single(mode, tracking=True)
                bench.batch(mode, tracking=True)
                bench.end_to_end(mode)
                bench.rss_full_buffer(mode)
                bench.delivery(mode, DELIVERY_RATE)
                bench.delivery(mode, DISK_RATE)
            if KAFKA:
                bench.single_kafka()
            bench.limit_opensearch()
            bench.enrichment()
            bench.rules()
            bench.receipts()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if ONLY and ONLY != "http":
        return 0

    figures = {name: summarise(samples) for name, samples in bench.samples.items()}
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"seconds": SECONDS, "repeats": REPEATS, "end_to_end_events": E2E_EVENTS,
                     "connections": CONNECTIONS},
        "figures": figures,
        "targets": targets(figures),
    }
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "latest.md").write_text(markdown(result))
    print(table(result))
    from chart import draw

    draw(result, RESULTS / "latest.png")
    print(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.png'}")
    if not ONLY:
        publish(result)
    return 0


# The part of RESULTS.md a full run rewrites: its figures and targets. The reading of them around it is written
# by hand, and says which run it reads.
GENERATED_START = "<!-- make bench: generated from the last full run, start -->"
GENERATED_END = "<!-- make bench: generated from the last full run, end -->"


def publish(result: dict) -> None:
    """A full run's figures into bench/RESULTS.md (between the markers), RESULTS.json and RESULTS.png."""
    page = BENCH / "RESULTS.md"
    text = page.read_text()
    start, end = text.find(GENERATED_START), text.find(GENERATED_END)
    if start < 0 or end < start:
        print(f"{page} has no generated part (its markers are missing): left as it is")
        return
    generated = f"{GENERATED_START}\n{markdown(result)}{GENERATED_END}"
    page.write_text(text[:start] + generated + text[end + len(GENERATED_END):])
    shutil.copyfile(RESULTS / "latest.json", BENCH / "RESULTS.json")
    shutil.copyfile(RESULTS / "latest.png", BENCH / "RESULTS.png")
    print(f"wrote the figures of {page} (between its markers), RESULTS.json and RESULTS.png")


if __name__ == "__main__":
    sys.exit(main())
