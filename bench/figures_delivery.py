"""The delivery figures: end_to_end (batches pushed as fast as taken, first accept to last searchable),
limit_opensearch (the same documents bulk-indexed straight into OpenSearch), delivery (time from a 2xx to
searchable at a fixed rate, and bytes written per event), rss_full_buffer and searchable (with SEED_BIN)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from harness import Harness
from knobs import E2E_EVENTS
from load import direct_bulk, paced_delivery, push_batches, wrk
from opensearch import delete_indices, searchable_now, wait_until_searchable


class DeliveryFigures(Harness):
    """Figures of what happens to accepted events: how fast and how soon they become searchable, at what cost."""

    def end_to_end(self, mode: str) -> None:
        server = self.collector(mode, workers=os.cpu_count() or 1)
        try:
            cpu = server.cpu_seconds()
            first_accept, _ = asyncio.run(push_batches(server.url, self.token, E2E_EVENTS))
            last_searchable = wait_until_searchable(server.environment, E2E_EVENTS)  # type: ignore[attr-defined]
            cpu = server.cpu_seconds() - cpu
            delete_indices(server.environment)  # type: ignore[attr-defined]
            self.record(f"end_to_end[{mode}]", events_per_second=E2E_EVENTS / (last_searchable - first_accept),
                        cpu_seconds_per_10k=cpu / E2E_EVENTS * 10_000, peak_rss_mb=server.memory_mb("VmHWM"))
        finally:
            server.stop()

    def limit_opensearch(self) -> None:
        environment = "benchlimit" + uuid.uuid4().hex[:8]
        best = asyncio.run(direct_bulk(environment, E2E_EVENTS))
        self.record("limit_opensearch", **best)

    def delivery(self, mode: str, rate: float) -> None:
        server = self.collector(mode, workers=1)
        try:
            written = server.written_bytes()
            result = asyncio.run(paced_delivery(server.url, self.token, server.environment, rate))  # type: ignore[attr-defined]
            written = server.written_bytes() - written
            delete_indices(server.environment)  # type: ignore[attr-defined]
            self.record(f"delivery[{mode}]@{rate:g}", **result,
                        disk_bytes_per_event=written / max(1, result["accepted"]))
        finally:
            server.stop()

    def rss_full_buffer(self, mode: str) -> None:
        # OpenSearch unreachable and batches larger than the buffer: the 100,000 events stay in memory.
        server = self.collector(mode, workers=1, OPEN_SEARCH_DNS="http://127.0.0.1:9", QUEUE_CAPACITY=100_000,
                                BULK_SIZE=1_000_000, FLUSH_INTERVAL_SECONDS=3600)
        try:
            _, statuses = asyncio.run(push_batches(server.url, self.token, 100_000))
            self.record(f"rss_full_buffer[{mode}]", rss_mb=server.memory_mb("VmRSS"),
                        created_batches=statuses.get("created", 0))
        finally:
            server.stop()

    def searchable(self, mode: str) -> None:
        """Whole machine, one event per request: documents that became searchable per second during the load
        (the count is read as it is, no refresh forced), next to the accepted rate."""
        server = self.seed() if mode == "seed" else self.collector(mode, workers=os.cpu_count() or 1)
        try:
            started = time.time()
            result = wrk(server.url, self.token)
            count = searchable_now(server.environment)  # type: ignore[attr-defined]
            elapsed = time.time() - started
            delete_indices(server.environment)  # type: ignore[attr-defined]
            self.record(f"searchable[{mode}]", accepted_per_second=result["accepted_per_second"],
                        searchable_per_second=count / elapsed,
                        **{k: v for k, v in result.items() if k.startswith("generator_")})
        finally:
            server.stop()
