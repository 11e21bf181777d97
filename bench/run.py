"""`make bench`: the collector measured against limits measured in the same run, on the same machine.

Figures (each measured BENCH_REPEATS times, interleaved, reported as median with min and max):
  limit_http        the same server with a handler that only answers 200: the HTTP ceiling
  single            POST /events, one event per request, one worker, 64 connections (wrk)
  single_all_cores  the same on SERVER_WORKERS = CPU count
  latency           p50/p99 at a fixed rate of half of `single` (oha paces its requests)
  batch             POST /events/batch, 100 events per request (wrk)
  end_to_end        BENCH_E2E_EVENTS pushed as fast as taken: first accept to last document searchable
  limit_opensearch  the same documents bulk-indexed straight into OpenSearch by a tight client
  rss_full_buffer   the collector's RSS holding a full 100,000-event buffer
  seed              with SEED_BIN (a build of the original Rust collector, scripts/build-seed): `single` pinned
                    as above, and `searchable` (whole machine, one event per request for SECONDS: documents
                    that became searchable per second during the load) for it and for this collector's modes
  delivery          at a fixed rate (BENCH_DELIVERY_RATE, 2,000/s; and 350/s): time from a 2xx to the document
                    being searchable (p50/p99), and bytes the collector wrote to disk per accepted event
  enrichment        CPU µs to decode, enrich and encode one event, each enrichment off and on (bench/enrichment.py)
  single[kafka]     `single` in ACK_MODE=kafka, pinned as above, against a one-broker scripts/kafka-dev (its JVM on
                    the load tool's CPU) and a 3-partition topic: each 2xx waits for the broker's acknowledgement
  end_to_end[kafka] `end_to_end` through that broker: kafka-mode collectors (a worker per CPU), a topic of a partition
                    per CPU and an `event-collector index` per CPU; first accept to last document searchable
Collector figures are taken in both ack modes. The one-worker HTTP figures (limit_http, single, latency)
pin the server to CPU 0 and the load tool and OpenSearch to CPU 1, so both sides of each ratio get one
core of their own; the other figures use the whole machine. Results: a table on stdout, bench/results/latest.json,
and bench/results/latest.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
PYTHON = sys.executable
SECRET = "bench-secret-" + "b" * 40
OPENSEARCH = os.environ.get("OPEN_SEARCH_DNS", "http://127.0.0.1:9200").rstrip("/")
SECONDS = int(os.environ.get("BENCH_SECONDS", "20"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
E2E_EVENTS = int(os.environ.get("BENCH_E2E_EVENTS", "500000"))
SEED_BIN = os.environ.get("SEED_BIN", "")
DELIVERY_RATE = float(os.environ.get("BENCH_DELIVERY_RATE", "2000"))
# The rate of the disk figure: the moderate load at which durable mode's bytes per event were first measured.
DISK_RATE = 350.0
CONNECTIONS = 64
SERVER_CPU, LOAD_CPU = "0", "1"
MODES = ("memory", "durable")
# BENCH_ONLY=kafka: single[kafka] and end_to_end[kafka] alone, printed and not written to results (a check on a shared machine).
ONLY = os.environ.get("BENCH_ONLY", "")

sys.path.insert(0, str(REPO / "src"))
from event_collector.api.auth import mint_token  # noqa: E402
from event_collector.api.validation import decode_event  # noqa: E402
from event_collector.envelope import build_envelope  # noqa: E402
from event_collector.shipper.template import index_template  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Server:
    """A collector (or the limit app) in its own process group, with its CPU time and memory readable."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, workdir: Path,
                 pinned: bool = False) -> None:
        if pinned:
            command = ["taskset", "-c", SERVER_CPU, *command]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(workdir / f"server-{port}.log", "wb")
        self.process = subprocess.Popen(command, env=env, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for(self.url)

    def pids(self) -> list[int]:
        found = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.process.pid:
                        found.append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    pass
        return found

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
            except OSError:
                pass
        return total

    def memory_mb(self, field: str) -> float:
        """Sum over the server's processes of a /proc status field (VmRSS now, VmHWM peak)."""
        total = 0
        for pid in self.pids():
            try:
                match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
                total += int(match.group(1)) if match else 0
            except OSError:
                pass
        return total / 1024

    def written_bytes(self) -> int:
        """Bytes the server's processes caused to be written to storage (/proc/PID/io write_bytes)."""
        total = 0
        for pid in self.pids():
            try:
                match = re.search(r"^write_bytes: (\d+)", Path(f"/proc/{pid}/io").read_text(), re.M)
                total += int(match.group(1)) if match else 0
            except OSError:
                pass
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.token = mint_token(SECRET, "bench-user", 24 * 3600)
        self.samples: dict[str, list[dict[str, float]]] = {}

    def record(self, figure: str, **values: float) -> None:
        self.samples.setdefault(figure, []).append(values)
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in values.items())
        print(f"  {figure}: {shown}", flush=True)

    def collector(self, mode: str, workers: int = 1, pinned: bool = False, **extra: Any) -> Server:
        port = free_port()
        environment = "bench" + uuid.uuid4().hex[:10]
        env = {**os.environ, "JWT_SECRET": SECRET, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port),
               "SERVER_WORKERS": str(workers), "ACK_MODE": mode, "OPEN_SEARCH_DNS": OPENSEARCH,
               "SERVER_ENVIRONMENT": environment,
               "DATABASE_URL": f"sqlite://{self.workdir / (environment + '.db')}",
               **{k: str(v) for k, v in extra.items()}}
        server = Server([PYTHON, "-m", "event_collector.cli", "serve"], env, port, self.workdir, pinned)
        server.environment = environment  # type: ignore[attr-defined]
        return server

    def seed(self, pinned: bool = False) -> Server:
        """The original Rust collector, with the settings it reads and an SQLite file with its table."""
        port = free_port()
        environment = "benchseed" + uuid.uuid4().hex[:8]
        database = self.workdir / (environment + ".db")
        with sqlite3.connect(database) as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, log TEXT)")
        env = {**os.environ, "JWT_SECRET": SECRET, "SERVER_PORT": str(port), "SERVER_ENVIRONMENT": environment,
               "OPEN_SEARCH_DNS": OPENSEARCH, "DATABASE_URL": f"sqlite://{database}"}
        server = Server([SEED_BIN], env, port, self.workdir, pinned)
        server.environment = environment  # type: ignore[attr-defined]
        return server

    def single_seed(self) -> None:
        server = self.seed(pinned=True)
        try:
            cpu = server.cpu_seconds()
            with opensearch_on_load_cpu():
                result = self.wrk(server.url, pinned=True)
            # CPU per event is the steadier comparison: the accept rate also depends on how fast wrk, which
            # shares its core with OpenSearch, sends (a worker that is not saturated waits for it).
            cpu = server.cpu_seconds() - cpu
            self.record("single[seed]", **result,
                        cpu_seconds_per_10k=cpu / max(1, result["accepted_per_second"] * SECONDS) * 10_000)
        finally:
            server.stop()

    def searchable(self, mode: str) -> None:
        """Whole machine, one event per request: documents that became searchable per second during the load
        (the count is read as it is, no refresh forced), next to the accepted rate."""
        server = self.seed() if mode == "seed" else self.collector(mode, workers=os.cpu_count() or 1)
        try:
            started = time.time()
            result = self.wrk(server.url)
            count = searchable_now(server.environment)  # type: ignore[attr-defined]
            elapsed = time.time() - started
            delete_indices(server.environment)  # type: ignore[attr-defined]
            self.record(f"searchable[{mode}]", accepted_per_second=result["accepted_per_second"],
                        searchable_per_second=count / elapsed)
        finally:
            server.stop()

    def limit_server(self) -> Server:
        port = free_port()
        command = [PYTHON, "-m", "uvicorn", "--app-dir", str(BENCH), "limit_app:app", "--host", "127.0.0.1",
                   "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                   "--log-level", "warning"]
        return Server(command, dict(os.environ), port, self.workdir, pinned=True)

    # -- load tools --------------------------------------------------------------------------------

    def wrk(self, url: str, batch: int = 1, pinned: bool = False) -> dict[str, float]:
        env = {**os.environ, "BENCH_TOKEN": self.token, "BENCH_BATCH": str(batch)}
        prefix = ["taskset", "-c", LOAD_CPU, "wrk", "-t1"] if pinned else ["wrk", "-t2"]
        output = subprocess.run(
            [*prefix, f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s", str(BENCH / "wrk" / "events.lua"),
             url], env=env, capture_output=True, text=True, check=True).stdout
        requests = float(re.search(r"(\d+) requests in", output).group(1))
        duration = float(re.search(r"requests in ([\d.]+)s", output).group(1))
        non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
        failed = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, errors.groups())) if errors else 0)
        return {"requests_per_second": requests / duration, "accepted_per_second": (requests - failed) / duration,
                "errors": failed}

    def oha(self, url: str, rate: float) -> dict[str, float]:
        body = msgspec.json.encode({"log_id": "latency-probe", "page": "/home", "event": "click",
                                    "param": {"price": 1200}})
        output = subprocess.run(
            ["taskset", "-c", LOAD_CPU, oha_binary(), "-z", f"{SECONDS}s", "-q", str(int(rate)), "-c", str(CONNECTIONS), "--no-tui",
             "--output-format", "json", "--latency-correction", "-m", "POST", "-H",
             f"Authorization: Bearer {self.token}", "-d", body.decode(), url + "/events"],
            capture_output=True, text=True, check=True).stdout
        result = json.loads(output)
        percentiles = result["latencyPercentiles"]
        return {"rate": rate, "p50_ms": percentiles["p50"] * 1000, "p99_ms": percentiles["p99"] * 1000,
                "success_rate": result["summary"]["successRate"]}

    # -- figures -----------------------------------------------------------------------------------

    def limit_http(self) -> None:
        server = self.limit_server()
        try:
            with opensearch_on_load_cpu():
                self.record("limit_http", **self.wrk(server.url, pinned=True))
        finally:
            server.stop()

    def single(self, mode: str, workers: int = 1) -> float:
        one_worker = workers == 1
        server = self.collector(mode, workers, pinned=one_worker)
        try:
            cpu = server.cpu_seconds()
            if one_worker:
                with opensearch_on_load_cpu():
                    result = self.wrk(server.url, pinned=True)
            else:
                result = self.wrk(server.url)
            cpu = server.cpu_seconds() - cpu
            name = "single" if workers == 1 else "single_all_cores"
            self.record(f"{name}[{mode}]", **result,
                        cpu_seconds_per_10k=cpu / max(1, result["accepted_per_second"] * SECONDS) * 10_000,
                        peak_rss_mb=server.memory_mb("VmHWM"))
            return result["accepted_per_second"]
        finally:
            server.stop()

    def single_kafka(self) -> None:
        """`single` in ACK_MODE=kafka against a broker of its own (scripts/kafka-dev, one broker, state in the
        bench's temporary directory), started and stopped here."""
        from confluent_kafka.admin import AdminClient, NewTopic

        bootstrap = f"127.0.0.1:{free_port()}"
        # A state directory per round: kafka-dev keeps a directory's ports from its first start.
        kafka_env = {**os.environ, "KAFKA_DEV_DIR": str(self.workdir / f"kafka-{uuid.uuid4().hex[:8]}"), "KAFKA_DEV_BROKERS": "1",
                     "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        kafka_dev = str(REPO / "scripts" / "kafka-dev")
        subprocess.run([kafka_dev, "start"], env=kafka_env, check=True, capture_output=True)
        try:
            broker = subprocess.run([kafka_dev, "pid", bootstrap.rsplit(":", 1)[1]], env=kafka_env, check=True,
                                    capture_output=True, text=True).stdout.strip()
            subprocess.run(["taskset", "-a", "-cp", LOAD_CPU, broker], capture_output=True, check=True)
            # Made before the collector asks for it (a broker would create a missing one with one partition).
            topic = "bench-" + uuid.uuid4().hex[:10]
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(timeout=30)
            del admin  # its handle would log the broker's stop below
            server = self.collector("kafka", pinned=True, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic)
            try:
                cpu = server.cpu_seconds()
                result = self.wrk(server.url, pinned=True)
                cpu = server.cpu_seconds() - cpu
                self.record("single[kafka]", **result,
                            cpu_seconds_per_10k=cpu / max(1, result["accepted_per_second"] * SECONDS) * 10_000,
                            peak_rss_mb=server.memory_mb("VmHWM"))
            finally:
                server.stop()
            # The whole machine again for the run through Kafka and the indexers.
            subprocess.run(["taskset", "-a", "-cp", f"0-{(os.cpu_count() or 1) - 1}", broker], capture_output=True)
            self.end_to_end_kafka(bootstrap, admin_config={"bootstrap.servers": bootstrap})
        finally:
            subprocess.run([kafka_dev, "stop"], env=kafka_env, capture_output=True)

    def end_to_end_kafka(self, bootstrap: str, admin_config: dict[str, str]) -> None:
        """`end_to_end` through Kafka: collectors in ACK_MODE=kafka (SERVER_WORKERS = CPU count) take the
        batches, one indexer per CPU consumes a topic of as many partitions; first accept to last searchable."""
        from confluent_kafka.admin import AdminClient, NewTopic

        cpus = os.cpu_count() or 1
        topic = "bench-e2e-" + uuid.uuid4().hex[:10]
        admin = AdminClient(admin_config)  # kept until the topic exists: a dropped handle fails the request
        admin.create_topics([NewTopic(topic, num_partitions=cpus, replication_factor=1)])[topic].result(timeout=30)
        del admin
        server = self.collector("kafka", workers=cpus, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic)
        indexers = []
        try:
            env = {**os.environ, "JWT_SECRET": SECRET, "OPEN_SEARCH_DNS": OPENSEARCH, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                   "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": topic, "SERVER_ENVIRONMENT": server.environment}  # type: ignore[attr-defined]
            log = open(self.workdir / f"indexers-{topic}.log", "wb")
            indexers = [subprocess.Popen([PYTHON, "-m", "event_collector.cli", "index"], env=env, cwd=self.workdir,
                                         stdout=log, stderr=subprocess.STDOUT) for _ in range(cpus)]
            first_accept, _ = asyncio.run(push_batches(server.url, self.token, E2E_EVENTS))
            last_searchable = wait_until_searchable(server.environment, E2E_EVENTS)  # type: ignore[attr-defined]
            delete_indices(server.environment)  # type: ignore[attr-defined]
            self.record("end_to_end[kafka]", events_per_second=E2E_EVENTS / (last_searchable - first_accept))
        finally:
            for indexer in indexers:
                indexer.terminate()
            for indexer in indexers:
                try:
                    indexer.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    indexer.kill()
            server.stop()

    def latency(self, mode: str, rate: float) -> None:
        server = self.collector(mode, pinned=True)
        try:
            with opensearch_on_load_cpu():
                self.record(f"latency[{mode}]", **self.oha(server.url, rate))
        finally:
            server.stop()

    def batch(self, mode: str) -> None:
        server = self.collector(mode, workers=os.cpu_count() or 1)
        try:
            cpu = server.cpu_seconds()
            result = self.wrk(server.url, batch=100)
            cpu = server.cpu_seconds() - cpu
            events = result["accepted_per_second"] * 100
            self.record(f"batch[{mode}]", events_per_second=events, errors=result["errors"],
                        cpu_seconds_per_10k=cpu / max(1, events * SECONDS) * 10_000,
                        peak_rss_mb=server.memory_mb("VmHWM"))
        finally:
            server.stop()

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

    def enrichment(self) -> None:
        from enrichment import measure

        self.record("enrichment", **measure())

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


async def push_batches(url: str, token: str, total: int, per_request: int = 100,
                       concurrency: int = 8) -> tuple[float, dict[str, int]]:
    """Send `total` events in batches; returns the time of the first accept and the answers' statuses."""
    prefix = uuid.uuid4().hex[:12]
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


def searchable_now(environment: str) -> int:
    import httpx

    response = httpx.get(f"{OPENSEARCH}/events_{environment}_*/_count", params={"allow_no_indices": "true"})
    return response.json()["count"] if response.status_code == 200 else 0


def wait_until_searchable(environment: str, expected: int, timeout: float = 1800) -> float:
    """Poll the count without forcing a refresh: a document counts once OpenSearch made it searchable."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        response = httpx.get(f"{OPENSEARCH}/events_{environment}_*/_count", params={"allow_no_indices": "true"})
        if response.status_code == 200 and response.json()["count"] >= expected:
            return time.time()
        time.sleep(0.2)
    raise RuntimeError(f"only part of {expected} documents became searchable")


def delete_indices(environment: str) -> None:
    import httpx

    httpx.delete(f"{OPENSEARCH}/events_{environment}_*", timeout=120)
    httpx.delete(f"{OPENSEARCH}/_index_template/events_{environment}", timeout=120)


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


class opensearch_on_load_cpu:
    """Keep the dev OpenSearch node (when it is ours) off the server's CPU while a pinned figure runs."""

    def __enter__(self) -> None:
        found = subprocess.run([str(REPO / "scripts" / "opensearch-dev"), "pid"], capture_output=True, text=True,
                               env={**os.environ, "OPEN_SEARCH_DNS": OPENSEARCH})
        self.pid = found.stdout.strip() if found.returncode == 0 else ""
        if self.pid:
            subprocess.run(["taskset", "-a", "-cp", LOAD_CPU, self.pid], capture_output=True, check=True)

    def __exit__(self, *exc_info: object) -> None:
        if self.pid:
            subprocess.run(["taskset", "-a", "-cp", f"0-{(os.cpu_count() or 1) - 1}", self.pid],
                           capture_output=True, check=True)


def oha_binary() -> str:
    found = shutil.which("oha") or str(Path.home() / ".cargo" / "bin" / "oha")
    if not Path(found).exists():
        raise RuntimeError("oha is not installed: run scripts/bench, which installs it with cargo")
    return found


def summarise(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    summary = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


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
            bench.limit_http()
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
                bench.end_to_end(mode)
                bench.rss_full_buffer(mode)
                bench.delivery(mode, DELIVERY_RATE)
                bench.delivery(mode, DISK_RATE)
            bench.single_kafka()
            bench.limit_opensearch()
            bench.enrichment()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if ONLY:
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
    print(table(result))
    from chart import draw

    draw(result, RESULTS / "latest.png")
    print(f"wrote {RESULTS / 'latest.json'} and {RESULTS / 'latest.png'}")
    return 0


def median(figures: dict, figure: str, key: str) -> float:
    return figures[figure][key]["median"]


def targets(figures: dict) -> list[dict[str, Any]]:
    http = median(figures, "limit_http", "requests_per_second")
    storage = median(figures, "limit_opensearch", "events_per_second")
    checks = []
    if "single[seed]" in figures:
        seed = median(figures, "single[seed]", "accepted_per_second")
        seed_searchable = median(figures, "searchable[seed]", "searchable_per_second")
        for mode, goal in (("memory", 1.5), ("durable", 1.0)):
            checks.append({"target": f"single[{mode}] >= {goal}x single[seed]", "goal": goal,
                           "ratio": median(figures, f"single[{mode}]", "accepted_per_second") / seed})
            checks.append({"target": f"searchable[{mode}] >= 1.2x searchable[seed]", "goal": 1.2,
                           "ratio": median(figures, f"searchable[{mode}]", "searchable_per_second") / seed_searchable})
    for mode in MODES:
        single = median(figures, f"single[{mode}]", "accepted_per_second")
        checks += [
            {"target": f"single[{mode}] >= 75% of limit_http", "ratio": single / http, "goal": 0.75},
            {"target": f"batch[{mode}] >= 10x single", "goal": 10.0,
             "ratio": median(figures, f"batch[{mode}]", "events_per_second") / single},
            {"target": f"end_to_end[{mode}] >= 80% of limit_opensearch", "goal": 0.8,
             "ratio": median(figures, f"end_to_end[{mode}]", "events_per_second") / storage},
            {"target": f"rss_full_buffer[{mode}] <= 200 MB", "goal": 200.0,
             "ratio": median(figures, f"rss_full_buffer[{mode}]", "rss_mb"), "at_most": True},
            {"target": f"delivery[{mode}]@{DELIVERY_RATE:g} p99 <= 2,000 ms", "goal": 2000.0, "at_most": True,
             "ratio": median(figures, f"delivery[{mode}]@{DELIVERY_RATE:g}", "p99_ms")},
        ]
    checks.append({"target": f"delivery[durable]@{DISK_RATE:g} <= 2 KB written per event", "goal": 2048.0,
                   "at_most": True, "ratio": median(figures, f"delivery[durable]@{DISK_RATE:g}", "disk_bytes_per_event")})
    for check in checks:
        check["met"] = check["ratio"] <= check["goal"] if check.pop("at_most", False) else check["ratio"] >= check["goal"]
    return checks


def table(result: dict) -> str:
    lines = [f"{'figure':30} {'measure':22} {'median':>12} {'min':>12} {'max':>12}"]
    for figure, measures in result["figures"].items():
        for measure, value in measures.items():
            lines.append(f"{figure:30} {measure:22} {value['median']:>12,.1f} {value['min']:>12,.1f}"
                         f" {value['max']:>12,.1f}")
    lines.append("")
    for check in result["targets"]:
        lines.append(f"{'MET ' if check['met'] else 'MISS'} {check['target']:48} {check['ratio']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
