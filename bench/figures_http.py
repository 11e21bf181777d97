"""The HTTP figures: limit_http (the limit app), single and single_all_cores (one event per request, wrk),
single[seed], latency (oha at a fixed rate) and batch (100 events per request); track and track_batch, the
same two through the tracking API (/v1/track, /v1/batch with a write key). The one-worker ones pin the server
to SERVER_CPU and the load tool and OpenSearch to LOAD_CPU."""

from __future__ import annotations

import os
import re
import urllib.request

from harness import Harness
from knobs import SECONDS
from load import oha, wrk
from opensearch import opensearch_on_load_cpu
from servers import stolen_seconds


def overflow_share(url: str) -> float:
    """The share of the events a collector answered that went to its pending store, the buffer being full
    (OpenSearch took less than came in): each costs a SQLite row, several times a buffered event's CPU, so
    this share moves a round's rate and CPU per request (bench/RESULTS.md)."""
    page = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    counts = dict(re.findall(r'^event_collector_events_received_total\{outcome="(\w+)"\} ([\d.e+]+)$', page, re.M))
    created, pending = float(counts.get("created", 0)), float(counts.get("pending", 0))
    return pending / (created + pending) if created + pending else 0.0


class HttpFigures(Harness):
    """Figures of a server's HTTP intake: accepted requests per second, CPU per request, latency."""

    def limit_http(self, kind: str) -> None:
        """limit_http[raw] and limit_http[uvicorn]: the ceilings, with their own CPU per request."""
        server = self.limit_server(kind)
        try:
            cpu, waited, stolen = server.cpu_seconds(), server.waiting_seconds(), stolen_seconds()
            with opensearch_on_load_cpu():
                result = wrk(server.url, self.token, pinned=True)
            cpu, waited = server.cpu_seconds() - cpu, server.waiting_seconds() - waited
            self.record(f"limit_http[{kind}]", **result, server_cpu_share=cpu / SECONDS,
                        server_waiting_share=waited / SECONDS, stolen_share=(stolen_seconds() - stolen) / SECONDS,
                        cpu_us_per_request=cpu / max(1, result["requests_per_second"] * SECONDS) * 1e6)
        finally:
            server.stop()

    def single(self, mode: str, workers: int = 1, tracking: bool = False) -> float:
        one_worker = workers == 1
        server = self.collector(mode, workers, pinned=one_worker)
        write_key = self.write_key if tracking else ""
        try:
            cpu, waited, stolen = server.cpu_seconds(), server.waiting_seconds(), stolen_seconds()
            if one_worker:
                with opensearch_on_load_cpu():
                    result = wrk(server.url, self.token, pinned=True, write_key=write_key)
            else:
                result = wrk(server.url, self.token, write_key=write_key)
            cpu, waited = server.cpu_seconds() - cpu, server.waiting_seconds() - waited
            name = "track" if tracking else "single" if workers == 1 else "single_all_cores"
            self.record(f"{name}[{mode}]", **result, overflow_share=overflow_share(server.url),
                        cpu_seconds_per_10k=cpu / max(1, result["accepted_per_second"] * SECONDS) * 10_000,
                        server_cpu_share=cpu / SECONDS, server_waiting_share=waited / SECONDS,
                        stolen_share=(stolen_seconds() - stolen) / SECONDS, peak_rss_mb=server.memory_mb("VmHWM"))
            return result["accepted_per_second"]
        finally:
            server.stop()

    def single_seed(self) -> None:
        server = self.seed(pinned=True)
        try:
            cpu, waited, stolen = server.cpu_seconds(), server.waiting_seconds(), stolen_seconds()
            with opensearch_on_load_cpu():
                result = wrk(server.url, self.token, pinned=True)
            # CPU per event is the steadier comparison on a busy machine: a worker that is not saturated
            # (server_cpu_share below 1) waited for its requests.
            cpu, waited = server.cpu_seconds() - cpu, server.waiting_seconds() - waited
            self.record("single[seed]", **result, server_cpu_share=cpu / SECONDS,
                        server_waiting_share=waited / SECONDS, stolen_share=(stolen_seconds() - stolen) / SECONDS,
                        cpu_seconds_per_10k=cpu / max(1, result["accepted_per_second"] * SECONDS) * 10_000)
        finally:
            server.stop()

    def latency(self, mode: str, rate: float) -> None:
        server = self.collector(mode, pinned=True)
        try:
            with opensearch_on_load_cpu():
                self.record(f"latency[{mode}]", **oha(server.url, self.token, rate))
        finally:
            server.stop()

    def batch(self, mode: str, tracking: bool = False) -> None:
        server = self.collector(mode, workers=os.cpu_count() or 1)
        try:
            cpu = server.cpu_seconds()
            result = wrk(server.url, self.token, batch=100, write_key=self.write_key if tracking else "")
            cpu = server.cpu_seconds() - cpu
            events = result["accepted_per_second"] * 100
            self.record(f"{'track_batch' if tracking else 'batch'}[{mode}]", events_per_second=events, errors=result["errors"],
                        **{k: v for k, v in result.items() if k.startswith("generator_")},
                        cpu_seconds_per_10k=cpu / max(1, events * SECONDS) * 10_000,
                        peak_rss_mb=server.memory_mb("VmHWM"))
        finally:
            server.stop()
