"""What every figure of the bench builds on: `Harness` holds the token and the samples recorded so far, and
starts the servers a figure measures (this collector in a mode, the original Rust one, the limit app)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from knobs import BENCH, OPENSEARCH, PYTHON, SECRET, SEED_BIN
from servers import Server, free_port

# After knobs, which puts this checkout's src first on sys.path.
from event_collector.api.auth import mint_token


class Harness:
    """The samples of each figure, and the servers to take them from; the figures are its subclasses' methods."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.token = mint_token(SECRET, "bench-user", 24 * 3600)
        # The tracking API's figures: one source and its key.
        self.write_key = "wk_bench_" + uuid.uuid4().hex
        self.sources_file = workdir / "sources.yaml"
        self.sources_file.write_text(f"sources: [{{name: bench, write_keys: [{self.write_key}]}}]\n")
        self.samples: dict[str, list[dict[str, float]]] = {}

    def record(self, figure: str, **values: float) -> None:
        self.samples.setdefault(figure, []).append(values)
        if values.get("generator_valid", 1.0) == 0.0:
            print(f"  {figure}: INVALID, the load generator was saturated (its busiest thread: "
                  f"{values['generator_cpu']:.0%} on CPU, {values['generator_waiting']:.0%} waiting for it)",
                  flush=True)
            return
        shown = ", ".join(f"{k}={v:,.1f}" if abs(v) >= 10 else f"{k}={v:,.2f}" for k, v in values.items())
        print(f"  {figure}: {shown}", flush=True)

    def collector(self, mode: str, workers: int = 1, pinned: bool = False, **extra: Any) -> Server:
        port = free_port()
        environment = "bench" + uuid.uuid4().hex[:10]
        env = {**os.environ, "JWT_SECRET": SECRET, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port),
               "SERVER_WORKERS": str(workers), "ACK_MODE": mode, "OPEN_SEARCH_DNS": OPENSEARCH,
               "SERVER_ENVIRONMENT": environment, "SOURCES_FILE": str(self.sources_file),
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

    def limit_server(self, kind: str) -> Server:
        """The HTTP ceiling, pinned: `uvicorn`, a bare ASGI app on uvicorn (httptools, uvloop), or `raw`, an
        httptools protocol answering 200 without ASGI (the fast path's own ceiling)."""
        port = free_port()
        if kind == "raw":
            command = [PYTHON, str(BENCH / "limit_raw.py"), str(port)]
        else:
            command = [PYTHON, "-m", "uvicorn", "--app-dir", str(BENCH), "limit_app:app", "--host", "127.0.0.1",
                       "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                       "--log-level", "warning"]
        return Server(command, dict(os.environ), port, self.workdir, pinned=True)
