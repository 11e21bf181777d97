"""The load the figures put on a server or on OpenSearch: wrk and oha runs, batches pushed as fast as they
are taken, single events paced at a rate with each one's time to searchable, and a tight bulk client."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import time
import uuid
from pathlib import Path

import aiohttp
import msgspec

from knobs import BENCH, CONNECTIONS, LOAD_CPU, OPENSEARCH, SECONDS
from generator import run_measured
from opensearch import delete_indices, wait_until_searchable

# Events built ahead per second of load: ids stay unique up to this rate (past it they repeat, which only
# OpenSearch sees: its create keeps one document per id), at ~0.5 KB of wrk's memory each.
PREBUILT_PER_SECOND = 40_000

# After knobs, which puts this checkout's src first on sys.path.
from event_collector.api.validation import decode_event
from event_collector.envelope import build_envelope
from event_collector.shipper.template import index_template


def wrk(url: str, token: str, batch: int = 1, pinned: bool = False, write_key: str = "") -> dict[str, float]:
    """wrk with events.lua (every request built before the load starts): the JWT API, or the tracking API when
    given a source's write key. Also returns the generator's headroom (bench/generator.py)."""
    basic = base64.b64encode(f"{write_key}:".encode()).decode() if write_key else ""
    threads = 1 if pinned else 2
    env = {**os.environ, "BENCH_TOKEN": token, "BENCH_BATCH": str(batch), "BENCH_BASIC": basic,
           "BENCH_PREBUILT": str(PREBUILT_PER_SECOND * SECONDS // threads)}
    prefix = ["taskset", "-c", LOAD_CPU] if pinned else []
    output, generator = run_measured(
        [*prefix, "wrk", f"-t{threads}", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s",
         str(BENCH / "wrk" / "events.lua"), url], env, pinned)
    requests = float(re.search(r"(\d+) requests in", output).group(1))
    duration = float(re.search(r"requests in ([\d.]+)s", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    failed = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
    return {"requests_per_second": requests / duration, "accepted_per_second": (requests - failed) / duration,
            "errors": failed, **generator}


def oha(url: str, token: str, rate: float) -> dict[str, float]:
    body = msgspec.json.encode({"log_id": "latency-probe", "page": "/home", "event": "click",
                                "param": {"price": 1200}})
    output = subprocess.run(
        ["taskset", "-c", LOAD_CPU, oha_binary(), "-z", f"{SECONDS}s", "-q", str(int(rate)), "-c", str(CONNECTIONS), "--no-tui",
         "--output-format", "json", "--latency-correction", "-m", "POST", "-H",
         f"Authorization: Bearer {token}", "-d", body.decode(), url + "/events"],
        capture_output=True, text=True, check=True).stdout
    result = json.loads(output)
    percentiles = result["latencyPercentiles"]
    return {"rate": rate, "p50_ms": percentiles["p50"] * 1000, "p99_ms": percentiles["p99"] * 1000,
            "success_rate": result["summary"]["successRate"]}


def oha_binary() -> str:
    found = shutil.which("oha") or str(Path.home() / ".cargo" / "bin" / "oha")
    if not Path(found).exists():
        raise RuntimeError("oha is not installed: run scripts/bench, which installs it with cargo")
    return found


async def push_batches(url: str, token: str, total: int, per_request: int = 100,
                       concurrency: int = 8, prefix: str = "") -> tuple[float, dict[str, int]]:
    """Send `total` events in batches, their log_ids `<prefix>-<n>` (a random prefix unless given); returns the
    time of the first accept and the answers' statuses."""
    prefix = prefix or uuid.uuid4().hex[:12]
    bodies = []
    for start in range(0, total, per_request):
        bodies.append(msgspec.json.encode([
            {"log_id": f"{prefix}-{n}", "page": "/home", "event": "click", "label": "buy", "target": "#cta",
             "section": "hero", "param": {"price": 1200, "currency": "KRW", "items": ["a", "b"]}}
            for n in range(start, min(total, start + per_request))]))
    bodies.reverse()
    first_accept: list[float] = []
    statuses: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        while bodies:
            body = bodies.pop()
            while True:
                async with session.post(url + "/events/batch", data=body, headers=headers) as response:
                    answer = await response.read()
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)  # 503: the collector asked us to come back
            if not first_accept:
                first_accept.append(time.time())
            status = msgspec.json.decode(answer)["status"]
            statuses[status] = statuses.get(status, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return first_accept[0], statuses


async def paced_delivery(url: str, token: str, environment: str, rate: float,
                         clients: int = 32) -> dict[str, float]:
    """Send single events at `rate` for SECONDS; returns the time from each 2xx to its document being
    searchable (p50/p99, in ms) and how many were accepted.

    Searchable is read from the index's document count, polled every 50 ms without forcing a refresh:
    the k-th document counted is taken to be the k-th event answered, which holds as long as the collector
    delivers in about the order it accepts (its buffer is FIFO; concurrent bulks blur it by one bulk).
    """
    prefix = uuid.uuid4().hex[:12]
    answered: list[float] = []
    counted: list[tuple[float, int]] = []
    total = int(rate * SECONDS)
    started = time.monotonic() + 0.5
    slots = iter(range(total))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
        for n in slots:
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            body = msgspec.json.encode({"log_id": f"{prefix}-{n}", "page": "/home", "event": "click",
                                        "param": {"price": 1200, "currency": "KRW"}})
            async with session.post(url + "/events", data=body, headers=headers) as response:
                await response.read()
                if response.status == 200:
                    answered.append(time.time())

    async def poll(session: aiohttp.ClientSession, done: asyncio.Event) -> None:
        count_url = f"{OPENSEARCH}/events_{environment}_*/_count?allow_no_indices=true"
        deadline = None
        while True:
            async with session.get(count_url) as response:
                count = (await response.json())["count"] if response.status == 200 else 0
            counted.append((time.time(), count))
            if done.is_set():
                deadline = deadline or time.monotonic() + 60
                if count >= len(answered) or time.monotonic() > deadline:
                    return
            await asyncio.sleep(0.05)

    done = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        poller = asyncio.create_task(poll(session, done))
        await asyncio.gather(*(client(session) for _ in range(clients)))
        done.set()
        await poller
    answered.sort()
    latencies, position = [], 0
    for k, acked_at in enumerate(answered):
        while position < len(counted) and counted[position][1] < k + 1:
            position += 1
        if position == len(counted):
            break  # never became searchable within the minute: reported as missing
        latencies.append(counted[position][0] - acked_at)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"rate": rate, "accepted": len(answered), "missing": len(answered) - len(latencies),
            "p50_ms": quantiles[49] * 1000, "p99_ms": quantiles[98] * 1000}


async def direct_bulk(environment: str, total: int) -> dict[str, float]:
    """Index `total` collector-shaped documents straight into OpenSearch; probe batch size and concurrency
    on a tenth of them first, then run the best on all."""
    event = decode_event(b'{"log_id":"x","page":"/home","event":"click","label":"buy","target":"#cta",'
                         b'"section":"hero","param":{"price":1200,"currency":"KRW","items":["a","b"]}}')
    headers = {"device-uuid": "bench-device", "app-version": "1.0.0", "os-version": "bench-os", "user-agent": None}
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{OPENSEARCH}/_index_template/events_{environment}",
                               data=msgspec.json.encode(index_template(environment)),
                               headers={"Content-Type": "application/json"}) as response:
            response.raise_for_status()

        async def run(run_id: str, count: int, batch: int, concurrency: int) -> float:
            lines = []
            for n in range(count):
                event.log_id = f"{run_id}-{n}"
                envelope = build_envelope(environment, event, "bench-user", headers, time.time())
                lines.append(b'{"create":{"_index":"%s","_id":"%s"}}\n%s\n' % (
                    envelope.index.encode(), envelope.log_id.encode(), envelope.document))
            bodies = [b"".join(lines[i:i + batch]) for i in range(0, count, batch)]
            bodies.reverse()
            started = time.time()

            async def worker() -> None:
                while bodies:
                    body = bodies.pop()
                    async with session.post(f"{OPENSEARCH}/_bulk", data=body,
                                            headers={"Content-Type": "application/x-ndjson"}) as response:
                        await response.read()

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return started

        trials = {}
        for batch in (1000, 5000):
            for concurrency in (2, 4, 8):
                run_id = uuid.uuid4().hex[:8]
                started = await run(run_id, total // 10, batch, concurrency)
                trials[batch, concurrency] = (total // 10) / (time.time() - started)
        batch, concurrency = max(trials, key=trials.get)
        run_id = uuid.uuid4().hex[:8]
        started = await run(run_id, total, batch, concurrency)
        # The probes' documents are in the same indices, under other ids.
        probes = (total // 10) * len(trials)
        finished = wait_until_searchable(environment, total + probes)
        delete_indices(environment)
        return {"events_per_second": total / (finished - started), "batch_size": batch, "concurrency": concurrency}
