"""Helpers the tests share: a real collector process, a real OpenSearch, and waiting for conditions."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import sys
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

import fault_reports

REPO = Path(__file__).resolve().parent.parent
OPENSEARCH_URL = os.environ.get("OPEN_SEARCH_DNS", "http://127.0.0.1:9200").rstrip("/")
TEST_SECRET = "test-secret-" + "x" * 32


def wait_until(condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1, message: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or condition}")
        time.sleep(interval)


async def wait_until_async(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
                           message: str = "") -> Any:
    """`wait_until` for a test that runs on the event loop: the loop goes on (background tasks run)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or condition}")
        await asyncio.sleep(interval)


class Clock:
    """Time that moves only when a test says so: a store's `clock`, its heartbeat judge's."""

    def __init__(self, now: float = 2_000_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def query(path, sql: str, *params) -> list[tuple]:
    """The rows a statement returns from the SQLite file at `path`, read on a connection of its own."""
    import sqlite3

    with sqlite3.connect(path) as connection:
        return connection.execute(sql, params).fetchall()


def journal_events(database) -> list:
    """The events in flight every process's journal beside the store holds unsettled (pending/journal.py)."""
    from event_collector.pending import journal

    return [event for directory in journal.journal_directories(str(database))
            for _, events in journal.unsettled_events(directory) for event in events]


@contextmanager
def tmpfs(directory: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of `size_bytes` mounted at `directory` (made if missing) for the block: a small volume a test
    can fill up. Needs root; whatever uses the volume must be stopped before the block ends."""
    directory.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], check=True)  # still busy: detach it now, free it later


def fill_up(directory: Path) -> None:
    """Take every byte left on `directory`'s volume with a file of its own: the disk is full from now on."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, bytes(size))
            except OSError:  # less than that is left: take it in smaller pieces
                size //= 2
    finally:
        os.close(fd)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_environment() -> str:
    # Fixed length and random, so no environment's index pattern is a prefix of another's.
    return "t" + uuid.uuid4().hex[:12]


class OpenSearch:
    """A thin synchronous client of the real test node, for assertions."""

    def __init__(self, url: str = OPENSEARCH_URL) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=60)

    def pattern(self, environment: str) -> str:
        return f"events_{environment}_*"

    def refresh(self, environment: str) -> None:
        self.http.post(f"/{self.pattern(environment)}/_refresh", params={"ignore_unavailable": "true",
                                                                           "allow_no_indices": "true"})

    def count(self, environment: str) -> int:
        self.refresh(environment)
        # A 503 comes while a just-created index has no active shard yet: ask again.
        response = wait_until(lambda: _not_503(self.http.get(
            f"/{self.pattern(environment)}/_count", params={"ignore_unavailable": "true", "allow_no_indices": "true"})),
            timeout=30, message="the index's shards to become active")
        response.raise_for_status()
        return response.json()["count"]

    def log_id_counts(self, environment: str) -> dict[str, int]:
        """How many documents each log_id has, over all of the environment's indices."""
        self.refresh(environment)
        counts: dict[str, int] = {}
        after = None
        while True:
            body: dict[str, Any] = {"size": 0, "aggs": {"ids": {"composite": {
                "size": 10000, "sources": [{"id": {"terms": {"field": "log_id"}}}]}}}}
            if after:
                body["aggs"]["ids"]["composite"]["after"] = after
            response = self._search(environment, body)
            aggregation = response.json().get("aggregations", {}).get("ids")
            if not aggregation or not aggregation["buckets"]:
                return counts
            for bucket in aggregation["buckets"]:
                counts[bucket["key"]["id"]] = bucket["doc_count"]
            after = aggregation.get("after_key")
            if not after:
                return counts

    def search(self, environment: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        self.refresh(environment)
        return self._search(environment, {"query": query, "size": 100}).json()["hits"]["hits"]

    def indexed_document(self, environment: str, log_id: str, timeout: float = 30) -> dict[str, Any]:
        """The one document of `log_id`, once it is searchable; fails if there are several."""
        hits = wait_until(lambda: self.search(environment, {"term": {"log_id": log_id}}), timeout=timeout,
                          message=f"{log_id} indexed")
        assert len(hits) == 1, hits
        return hits[0]["_source"]

    def _search(self, environment: str, body: dict[str, Any]) -> httpx.Response:
        # A 503 comes while a just-created index has no active shard yet: ask again.
        response = wait_until(lambda: _not_503(self.http.post(
            f"/{self.pattern(environment)}/_search", json=body,
            params={"ignore_unavailable": "true", "allow_no_indices": "true"})),
            timeout=30, message="the index's shards to become active")
        response.raise_for_status()
        return response


def _not_503(response: httpx.Response) -> httpx.Response | None:
    return None if response.status_code == 503 else response


class CollectorProcess:
    """`event-collector serve` as a real process, with its own port, environment name and SQLite file."""

    def __init__(self, tmp_path: Path, opensearch_url: str = OPENSEARCH_URL,
                 rlimits: dict[int, tuple[int, int]] | None = None, **settings: Any) -> None:
        # rlimits: resource limits of the process, e.g. {resource.RLIMIT_NOFILE: (256, 256)}.
        self.rlimits = rlimits or {}
        self.port = free_port()
        self.environment = settings.pop("SERVER_ENVIRONMENT", None) or unique_environment()
        self.database = Path(settings.pop("DATABASE", tmp_path / f"{self.environment}.db"))
        self.log_path = tmp_path / f"collector-{self.port}.log"
        self.env = {
            **os.environ,
            "JWT_SECRET": TEST_SECRET,
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(self.port),
            "SERVER_WORKERS": "1",
            "SERVER_ENVIRONMENT": self.environment,
            "OPEN_SEARCH_DNS": opensearch_url,
            "DATABASE_URL": f"sqlite://{self.database}",
            "FLUSH_INTERVAL_SECONDS": "0.2",
            "PENDING_REPLAY_INTERVAL_SECONDS": "1",
            "RETRY_BACKOFF_BASE_SECONDS": "0.2",
            "RETRY_BACKOFF_MAX_SECONDS": "1",
            "PENDING_OWNER_TIMEOUT_SECONDS": "2",
            "JANITOR_INTERVAL_SECONDS": "1",
            **{key: str(value) for key, value in settings.items()},
        }
        self.cwd = tmp_path
        self.process: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def start(self) -> "CollectorProcess":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "event_collector.cli", "serve"],
            env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=self._apply_rlimits if self.rlimits else None,
        )
        wait_until(self._answers, timeout=30, message=f"collector on {self.url} to answer /ping\n{self.log()}")
        return self

    def _apply_rlimits(self) -> None:
        import resource

        for limit, values in self.rlimits.items():
            resource.setrlimit(limit, values)

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def report_settings(self, *names: str) -> dict[str, str]:
        """The settings a fault report's row assumes: the workers and SQLite's sync level always (they decide
        what a kill survives), then `names`; each as this process ran with it, else its default."""
        import msgspec

        from event_collector.settings import Settings

        defaults = {field.name.upper(): str(field.default) for field in msgspec.structs.fields(Settings)}
        return {name: self.env.get(name, defaults.get(name, "unset"))
                for name in ("SERVER_WORKERS", "SQLITE_SYNCHRONOUS", *names)}

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"collector exited with {self.process.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.url + "/ping", timeout=1).text == "pong"
        except httpx.HTTPError:
            return False

    def token(self, subject: str = "user-1", ttl_seconds: int = 3600) -> str:
        import jwt

        now = int(time.time())
        return jwt.encode({"sub": subject, "iat": now, "exp": now + ttl_seconds}, TEST_SECRET, algorithm="HS256")

    def auth(self, subject: str = "user-1") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(subject)}"}

    def post_event(self, event: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post("/events", json=event, headers={**self.auth(), **(headers or {})})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self.http.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pending_rows(self) -> int:
        """Events stored and not confirmed delivered: the pending table's rows and the events in flight."""
        import sqlite3

        with sqlite3.connect(self.database) as connection:
            (rows,) = connection.execute("SELECT count(*) FROM pending").fetchone()
        return rows + len(journal_events(self.database))

    def dead_letters(self) -> list[tuple]:
        import sqlite3

        with sqlite3.connect(self.database) as connection:
            return connection.execute("SELECT log_id, reason FROM dead_letter ORDER BY id").fetchall()


def event(log_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"log_id": log_id or uuid.uuid4().hex, "page": "/home", "event": "click", **fields}


class DevNode:
    """A separate real OpenSearch node (scripts/opensearch-dev) that a test may stop, kill and restart."""

    def __init__(self, state_dir: Path, settings: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "OPEN_SEARCH_DNS": self.url, "OPENSEARCH_DEV_DIR": str(state_dir),
                    "OPENSEARCH_DEV_SETTINGS": settings}
        self.client = OpenSearch(self.url)

    def _script(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(REPO / "scripts" / "opensearch-dev"), command], env=self.env,
                              capture_output=True, text=True, timeout=300)

    def start(self) -> "DevNode":
        result = self._script("start")
        assert result.returncode == 0, result.stdout + result.stderr
        return self

    def stop(self) -> None:
        result = self._script("stop")
        assert result.returncode == 0, result.stdout + result.stderr

    def kill(self) -> None:
        """kill -9 the node's JVM."""
        pid = int(self._script("pid").stdout.strip())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or _is_zombie(pid), timeout=30,
                   message=f"OpenSearch pid {pid} to die")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


class _ClientThreads:
    """Client threads running `_client` from entering the `with` block until leaving it."""

    def __init__(self, clients: int) -> None:
        self.accepted: list[str] = []
        self.sent = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        self.stopped_at: float | None = None

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(60)
        self.stopped_at = time.monotonic()  # the end of the load, where a fault report's time to drain starts

    def _client(self) -> None:
        raise NotImplementedError


class Load(_ClientThreads):
    """Clients in threads sending new events until stopped; they keep going while the collector is down.

    Remembers every log_id answered 2xx, and counts what was sent and how it was answered.
    """

    def __init__(self, collector: "CollectorProcess", clients: int = 4) -> None:
        self.collector = collector
        self.statuses: dict[int | str, int] = {}
        self.retry_after_missing = 0
        super().__init__(clients)

    def _client(self) -> None:
        headers = self.collector.auth()
        with httpx.Client(base_url=self.collector.url, timeout=10, headers=headers) as http:
            while not self._stopping.is_set():
                sent = event()
                try:
                    response = http.post("/events", json=sent)
                    status: int | str = response.status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with self._lock:
                    self.sent += 1
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    if status == 200:
                        self.accepted.append(sent["log_id"])
                    elif status == 503 and "retry-after" not in response.headers:
                        self.retry_after_missing += 1
                if not isinstance(status, int):
                    self._stopping.wait(0.05)  # the collector is down: do not spin

    def count(self, status: int | str) -> int:
        with self._lock:
            return self.statuses.get(status, 0)




async def send_all(url: str, token: str, events: list[dict], concurrency: int = 32) -> list[int]:
    """POST each event from `concurrency` concurrent clients; returns the status codes."""
    queue = list(reversed(events))
    statuses: list[int] = []

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            while queue:
                response = await http.post("/events", json=queue.pop())
                statuses.append(response.status_code)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return statuses


def metric(collector: "CollectorProcess", name: str, **labels: str) -> float:
    """A series' value from the collector's /metrics page (0 when it has not been touched yet).

    With `labels`, the series carrying exactly those labels; without, the unlabelled series."""
    import re

    # A connection of its own: a pooled one left idle may be closed by the collector's header timeout just as
    # it is reused (a reset, not an answer), which tests with short timeouts run into.
    text = httpx.get(collector.url + "/metrics", timeout=30).text
    selector = "{" + ",".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}" if labels else ""
    match = re.search(rf"^{re.escape(name + selector)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def assert_delivered_exactly_once(name: str, load_or_accepted, node_client: OpenSearch, environment: str, *,
                                  fault: str, ack_mode: str, settings: dict[str, object], sent: int | None = None,
                                  drain_from: float | None = None, expected_loss: bool = False) -> dict[str, int]:
    """Wait until every event answered 2xx is indexed; fail on any lost or duplicated; report the figures.

    The time to drain runs from `drain_from` (a time.monotonic()), else from the end of the load when given a
    Load, else from this call (the tests call it when the fault is over)."""
    accepted = set(load_or_accepted.accepted if isinstance(load_or_accepted, _ClientThreads) else load_or_accepted)
    if drain_from is None:
        drain_from = getattr(load_or_accepted, "stopped_at", None) or time.monotonic()
    wait_until(lambda: node_client.count(environment) >= len(accepted), timeout=180,
               message=f"{len(accepted)} accepted events indexed")
    drain_seconds = time.monotonic() - drain_from
    counts = node_client.log_id_counts(environment)
    report = delivery_report(name, load_or_accepted, counts, sent=sent, fault=fault, ack_mode=ack_mode,
                             settings=settings, drain_seconds=drain_seconds, expected_loss=expected_loss)
    assert report["lost"] == 0, report
    assert report["duplicated"] == 0, report
    # An event may be indexed though its answer never reached the client (killed mid-reply): it was
    # sent, so that is no loss; what counts is that every 2xx is there, once.
    assert accepted <= set(counts)
    return counts


def delivery_report(name: str, load_or_accepted, counts: dict[str, int], *, sent: int | None = None,
                    **row: Any) -> dict:
    """fault_reports.delivery_report for a Load or a list of log_ids answered 2xx (then `sent` defaults to
    their number); `row` takes its required keywords."""
    if isinstance(load_or_accepted, _ClientThreads):
        return fault_reports.delivery_report(name, load_or_accepted.accepted, counts, sent=load_or_accepted.sent,
                                             **row)
    return fault_reports.delivery_report(name, load_or_accepted, counts, sent=sent or len(set(load_or_accepted)),
                                         **row)


class StallingProxy:
    """A TCP proxy to a port on this machine that, when paused, keeps every connection open but forwards
    nothing. `upstream_port` may change while it runs (e.g. from a closed port to OpenSearch's)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.delay_seconds = 0.0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.forwarding.wait()
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        for source, target in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self.forwarding.wait()  # paused: hold the bytes, keep both ends open
                if self.delay_seconds:
                    time.sleep(self.delay_seconds)  # a slow network or cluster, by design of the test
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.forwarding.set()
        self.listener.close()


class Nginx:
    """A real nginx (Debian's package) in front of the test OpenSearch node, configured per test: a proxy
    with a body limit, or one that wants credentials the collector does not have."""

    def __init__(self, state_dir: Path, upstream: str = OPENSEARCH_URL) -> None:
        self.dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream = upstream
        self.process: subprocess.Popen | None = None

    def configure(self, max_body: str = "100m", require_password: bool = False, password: str = "secret",
                  tls: tuple[Path, Path] | None = None, client_ca: Path | None = None) -> None:
        """`tls`: (certificate chain, key) files to serve https with; `client_ca`: require a client certificate
        signed by that CA (mutual TLS)."""
        (self.dir / "htpasswd").write_text(f"operator:{{PLAIN}}{password}\n")
        auth = f'auth_basic "opensearch"; auth_basic_user_file {self.dir}/htpasswd;' if require_password else ""
        ssl = ""
        if tls:
            ssl = f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};"
            if client_ca:
                ssl += f" ssl_client_certificate {client_ca}; ssl_verify_client on;"
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        temp = " ".join(f"{kind}_temp_path {self.dir}/{kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                             "uwsgi", "scgi"))
        (self.dir / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
# Workers as the master's user: the test's private directory holds their temporary files. (nginx ignores
# this, with a warning, when not started as root.)
user root;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    {temp}
    server {{
        listen 127.0.0.1:{self.port}{" ssl" if tls else ""};
        {ssl}
        client_max_body_size {max_body};
        location / {{ {auth} proxy_pass {self.upstream}; }}
    }}
}}
""")
        if self.process is not None:
            subprocess.run(["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-s", "reload"],
                           check=True, capture_output=True, timeout=30)

    def start(self, **config: Any) -> "Nginx":
        self.configure(**config)
        self.process = subprocess.Popen(["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                        stderr=subprocess.DEVNULL)
        wait_until(lambda: _port_open(self.port), timeout=30, message="nginx to listen")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Haproxy:
    """A real haproxy (Debian's package) balancing round-robin over collectors on this machine, each taken
    out while its /readyz does not answer 200 and put back once it does."""

    def __init__(self, state_dir: Path, backend_ports: list[int]) -> None:
        self.dir = state_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_ports = backend_ports
        self.process: subprocess.Popen | None = None

    def start(self) -> "Haproxy":
        servers = "\n".join(f"    server collector{n} 127.0.0.1:{port} check"
                            for n, port in enumerate(self.backend_ports))
        (self.dir / "haproxy.cfg").write_text(f"""
global
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    # A connection refused is tried again on the other server: no byte of the request was sent.
    retries 2
    option redispatch
frontend events
    bind 127.0.0.1:{self.port}
    default_backend collectors
backend collectors
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 1 rise 2
{servers}
""")
        self.process = subprocess.Popen(["haproxy", "-db", "-f", str(self.dir / "haproxy.cfg")],
                                        stdout=subprocess.DEVNULL, stderr=open(self.dir / "haproxy.log", "ab"))
        wait_until(lambda: _port_open(self.port), timeout=30, message="haproxy to listen")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


@contextmanager
def behind_haproxy(state_dir: Path, replicas: list["CollectorProcess"]) -> Iterator[Haproxy]:
    """Start `replicas` and a haproxy balancing over them; stop the balancer and every replica still running
    when the block ends."""
    balancer = None
    try:
        for replica in replicas:
            replica.start()
        balancer = Haproxy(state_dir, [replica.port for replica in replicas]).start()
        yield balancer
    finally:
        if balancer is not None:
            balancer.stop()
        for replica in replicas:
            if replica.process is not None and replica.process.poll() is None:
                replica.stop()


class DevCluster:
    """A real OpenSearch cluster of `size` nodes, each its own JVM (scripts/opensearch-dev cluster-start with
    OPENSEARCH_DEV_CLUSTER), so that a test can kill one and start it again."""

    def __init__(self, state_dir: Path, size: int = 3, heap: str = "512m") -> None:
        self.http_ports = [free_port() for _ in range(size)]
        transport_ports = [free_port() for _ in range(size)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.http_ports]
        self.env = {**os.environ, "OPENSEARCH_DEV_DIR": str(state_dir), "OPENSEARCH_DEV_HEAP": heap,
                    "OPENSEARCH_DEV_CLUSTER": ",".join(f"{http}:{transport}" for http, transport
                                                       in zip(self.http_ports, transport_ports)),
                    "OPENSEARCH_DEV_SETTINGS": "", "OPEN_SEARCH_DNS": self.urls[0]}
        self.killed: set[str] = set()

    @property
    def dns(self) -> str:
        """OPEN_SEARCH_DNS naming every node."""
        return ",".join(self.urls)

    def _script(self, command: str, url: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        env = {**self.env, "OPEN_SEARCH_DNS": url or self.urls[0]}
        return subprocess.run([str(REPO / "scripts" / "opensearch-dev"), command], env=env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> "DevCluster":
        result = self._script("cluster-start")
        assert result.returncode == 0, result.stdout + result.stderr
        return self

    def stop(self) -> None:
        result = self._script("cluster-stop")
        assert result.returncode == 0, result.stdout + result.stderr

    def client(self) -> OpenSearch:
        """A client of a node that was not killed."""
        return OpenSearch(next(url for url in self.urls if url not in self.killed))

    def node_url(self, node_name: str) -> str:
        return f"http://127.0.0.1:{node_name.rsplit('-', 1)[1]}"  # nodes are named opensearch-dev-<http port>

    def primaries(self, index_pattern: str) -> dict[str, int]:
        """Started primary shards of the indices matching `index_pattern`, per node URL."""
        response = self.client().http.get(f"/_cat/shards/{index_pattern}", params={"format": "json"})
        response.raise_for_status()
        counts: dict[str, int] = {}
        for shard in response.json():
            if shard["prirep"] == "p" and shard["state"] == "STARTED":
                counts[self.node_url(shard["node"])] = counts.get(self.node_url(shard["node"]), 0) + 1
        return counts

    def restart_killed(self) -> None:
        """Start the killed nodes again and wait until all the cluster's nodes are back and its shards green."""
        for url in sorted(self.killed):
            result = self._script("start", url)
            assert result.returncode == 0, result.stdout + result.stderr
        self.killed.clear()
        health = self.client().http.get("/_cluster/health", params={
            "wait_for_nodes": str(len(self.urls)), "wait_for_status": "green", "timeout": "120s"}, timeout=150).json()
        assert health["number_of_nodes"] == len(self.urls) and health["status"] == "green", health

    def kill(self, url: str) -> None:
        """kill -9 the JVM of the node at `url`."""
        pid = int(self._script("pid", url).stdout.strip())
        os.kill(pid, signal.SIGKILL)
        self.killed.add(url)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or _is_zombie(pid), timeout=30,
                   message=f"OpenSearch pid {pid} to die")


# Answers after which the same event is sent again: no answer at all, or one that says nothing was kept
# (503 with Retry-After; 502/504 from the balancer when a replica died holding the request). A 2xx or a
# 4xx is final.
_RESEND_STATUSES = frozenset({502, 503, 504})


class ResendingLoad(_ClientThreads):
    """Clients in threads sending new events through `url` until stopped. An event without a final answer
    is sent again with the same log_id until it gets one: a resend of an event that was in fact kept is
    answered 2xx again and indexed once (`_id = log_id`)."""

    def __init__(self, url: str, headers: dict[str, str], clients: int = 3) -> None:
        self.url = url
        self.headers = headers
        self.resent = 0
        super().__init__(clients)

    def _client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10, headers=self.headers) as http:
            while not self._stopping.is_set():
                sent = event()
                with self._lock:
                    self.sent += 1
                # Once started, an event is seen through to its final answer, even while stopping.
                while True:
                    try:
                        status = http.post("/events", json=sent).status_code
                    except httpx.HTTPError:
                        status = None
                    if status is not None and status not in _RESEND_STATUSES:
                        break
                    with self._lock:
                        self.resent += 1
                    time.sleep(0.05)  # a client's back-off before it resends, not a wait for a condition
                if status == 200:
                    with self._lock:
                        self.accepted.append(sent["log_id"])


class KafkaCluster:
    """A real Kafka cluster (scripts/kafka-dev: KRaft, one JVM per broker) that a test may kill brokers of.

    Ports are chosen free by the script at the first start and kept in the state dir, so a
    killed broker comes back on the same port with `start()`.
    """

    def __init__(self, state_dir: Path, brokers: int = 3, settings: str = "", heap: str = "") -> None:
        self.env = {**os.environ, "KAFKA_DEV_DIR": str(state_dir), "KAFKA_DEV_BROKERS": str(brokers),
                    "KAFKA_DEV_SETTINGS": settings}
        if heap:
            self.env["KAFKA_DEV_HEAP"] = heap
        # Broker 1 would otherwise take the port of a KAFKA_BOOTSTRAP_SERVERS the developer has set.
        self.env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        self.bootstrap_servers = ""

    def _script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(REPO / "scripts" / "kafka-dev"), *args], env=self.env,
                              capture_output=True, text=True, timeout=300)

    def start(self) -> "KafkaCluster":
        """Start every broker not running and wait until all are in the cluster and replicating."""
        result = self._script("start")
        assert result.returncode == 0, result.stdout + result.stderr
        self.bootstrap_servers = self._script("bootstrap").stdout.strip()
        return self

    def stop(self) -> None:
        result = self._script("stop")
        assert result.returncode == 0, result.stdout + result.stderr

    @property
    def ports(self) -> list[int]:
        """The brokers' client ports, broker 1 first."""
        return [int(server.rsplit(":", 1)[1]) for server in self.bootstrap_servers.split(",")]

    def pid(self, port: int) -> int | None:
        result = self._script("pid", str(port))
        return int(result.stdout) if result.returncode == 0 else None

    def kill(self, port: int | None = None) -> int:
        """kill -9 one broker's JVM (the first by default); returns its client port."""
        port = port or self.ports[0]
        pid = self.pid(port)
        assert pid is not None, f"no broker running on port {port}"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or _is_zombie(pid), timeout=30,
                   message=f"Kafka broker pid {pid} to die")
        return port


SCHEMA_2_COLUMNS = "log_id, index_name, document, received_at, attempts, next_attempt_at, lease_owner, last_error"


def write_store_of_schema_2(path, rows: list[tuple]) -> None:
    """A pending store as schema 2 left it (rows in flight leased in `pending`), written by schema 2's own
    statements (migrations 1 and 2, unchanged): `rows` are values for SCHEMA_2_COLUMNS of `pending`."""
    import sqlite3

    from event_collector.pending import schema

    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("BEGIN IMMEDIATE")
    for script in schema._MIGRATIONS[:2]:
        schema._run_script(connection, script)
    connection.execute("PRAGMA user_version = 2")
    connection.executemany(f"INSERT INTO pending ({SCHEMA_2_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    connection.execute("COMMIT")
    connection.close()


class Site:
    """An HTTP server on a loopback port of its own, so a web origin of its own, serving the files a test sets:
    `files[path] = (body, content type)`; `page(path, html)` for a page."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, kind = files.get(self.path.split("?")[0], (b"", "text/plain"))
                self.send_response(200 if body else 404)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self, path: str, html: str) -> None:
        self.files[path] = (html.encode(), "text/html; charset=utf-8")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def verify_process(url: str, *options: str) -> Iterator[subprocess.Popen]:
    """`event-collector verify URL OPTIONS…` as a real process, its output kept in pipes (text); killed if it
    still runs when the block ends (a test that failed half-way)."""
    process = subprocess.Popen([sys.executable, "-m", "event_collector.cli", "verify", url, *options],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
