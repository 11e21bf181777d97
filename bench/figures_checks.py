"""The figures of the checks at and after the door: `rules` (CPU per event of a 50-event tracking plan with
every transform on, against no rules: bench/rules.py, in a process of its own) and `receipts` (what one
POST /v1/receipts costs: its latency and the collector's CPU, for 1 and for 1,000 indexed ids)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import time
import uuid

import aiohttp

from harness import Harness
from knobs import BENCH, PYTHON
from load import push_batches
from opensearch import delete_indices, wait_until_searchable

# Receipts requests timed per size of request, one at a time (a caller waits for its answer).
RECEIPTS_REQUESTS = 30
RECEIPTS_EVENTS = 1_000


class CheckFigures(Harness):
    def rules(self) -> None:
        # Its own process: bench/rules.py sets RULES_FILE and the collector's settings in its environment.
        # Five alternating rounds of each, their medians (a few seconds): with one, a figure near its 20 µs
        # limit fell either side of it by chance (14 and 26 µs in the two repeats of one run).
        env = {**os.environ, "BENCH_REPEATS": "5"}
        answer = subprocess.run([PYTHON, str(BENCH / "rules.py"), "--json"], env=env, check=True,
                                capture_output=True, text=True, timeout=600)
        self.record("rules", **json.loads(answer.stdout.strip().splitlines()[-1]))

    def receipts(self) -> None:
        server = self.collector("memory", RECEIPTS_RATE_LIMIT=0)
        try:
            environment = server.environment  # type: ignore[attr-defined]
            log_ids = asyncio.run(_send(server.url, self.token))
            wait_until_searchable(environment, RECEIPTS_EVENTS)
            figures = {}
            for label, ids in (("one_id", log_ids[:1]), ("thousand_ids", log_ids)):
                cpu = server.cpu_seconds()
                latencies = asyncio.run(_ask(server.url, self.token, ids))
                cpu = server.cpu_seconds() - cpu
                figures[f"{label}_p50_ms"] = statistics.median(latencies) * 1000
                figures[f"{label}_max_ms"] = max(latencies) * 1000
                figures[f"{label}_cpu_ms"] = cpu / RECEIPTS_REQUESTS * 1000
            delete_indices(environment)
            self.record("receipts", **figures)
        finally:
            server.stop()


async def _send(url: str, token: str) -> list[str]:
    """RECEIPTS_EVENTS events through the JWT API; their ids."""
    prefix = "receipts" + uuid.uuid4().hex[:8]
    _, statuses = await push_batches(url, token, RECEIPTS_EVENTS, prefix=prefix)
    if set(statuses) != {"created"}:
        raise RuntimeError(f"the events for receipts were answered {statuses}")
    return [f"{prefix}-{n}" for n in range(RECEIPTS_EVENTS)]


async def _ask(url: str, token: str, ids: list[str]) -> list[float]:
    latencies = []
    body = json.dumps({"ids": ids}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for _ in range(RECEIPTS_REQUESTS):
            started = time.perf_counter()
            async with session.post(url + "/v1/receipts", data=body, headers=headers) as response:
                answer = await response.json()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"receipts answered {response.status}: {answer}")
            states = {receipt["state"] for receipt in answer["receipts"].values()}
            if states != {"indexed"}:
                raise RuntimeError(f"receipts of indexed events answered {states}")
    return latencies
