"""All settings, read from the environment once (a `.env` file fills in what the environment lacks)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Mapping

from dotenv import dotenv_values

from .exceptions import ConfigError

ACK_MODES = ("durable", "memory")


@dataclass(frozen=True)
class Settings:
    # The original Rust collector's names keep their meaning.
    open_search_dns: str = "http://localhost:9200"
    server_host: str = "0.0.0.0"
    server_port: int = 3000
    # Worker processes, each running the whole pipeline over the one shared pending store.
    server_workers: int = os.cpu_count() or 1
    jwt_secret: str = ""
    server_environment: str = "local"
    database_url: str = "sqlite://sqlite3.db"
    # Pipeline.
    queue_capacity: int = 100_000
    bulk_workers: int = 10
    bulk_size: int = 1000
    flush_interval_seconds: float = 10.0
    pending_replay_interval_seconds: float = 60.0
    shutdown_grace_seconds: float = 30.0
    open_search_timeout_seconds: float = 30.0
    # Input limits.
    max_body_bytes: int = 1024 * 1024
    batch_max_events: int = 1000
    body_read_timeout_seconds: float = 30.0
    # Connection-level limits for a public endpoint (docs/security.md): enforced by api/protocol.py
    # before a request reaches the app, so one client cannot hold memory, CPU or sockets.
    max_header_line_bytes: int = 16 * 1024
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_read_timeout_seconds: float = 10.0
    max_connections: int = 10_000
    # Events per second each user (token `sub`) may send, with a burst; 0 turns the limit off.
    rate_limit_per_user: float = 0.0
    rate_limit_burst: int = 0
    # How long a replayed row stays claimed before another replayer may take it again.
    pending_lease_seconds: float = 300.0
    retry_backoff_base_seconds: float = 1.0
    retry_backoff_max_seconds: float = 600.0
    max_delivery_attempts: int = 20
    # A process that has not beaten for this long is taken for dead, and its leases are void.
    pending_owner_timeout_seconds: float = 30.0
    pending_retention_days: float = 7.0
    dead_letter_retention_days: float = 30.0
    pending_max_bytes: int = 1 << 30
    janitor_interval_seconds: float = 300.0
    ack_mode: str = "durable"
    sqlite_synchronous: str = "NORMAL"

    @property
    def sqlite_path(self) -> str:
        if not self.database_url.startswith("sqlite://"):
            raise ConfigError(f"DATABASE_URL must start with sqlite:// (got {self.database_url!r})")
        return self.database_url.removeprefix("sqlite://") or "sqlite3.db"

    @property
    def opensearch_url(self) -> str:
        return self.open_search_dns.rstrip("/")

    def for_one_worker(self) -> "Settings":
        """One worker's share: QUEUE_CAPACITY and BULK_WORKERS are totals over all worker processes."""
        workers = self.server_workers
        return replace(self, queue_capacity=-(-self.queue_capacity // workers),
                       bulk_workers=-(-self.bulk_workers // workers))


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Build the settings from `environ` (default: the process environment) over an optional `.env`."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)

    kwargs = {}
    for field in fields(Settings):
        raw = values.get(field.name.upper())
        if raw is None:
            continue
        kind = type(field.default)
        try:
            kwargs[field.name] = kind(raw) if kind is not str else raw
        except ValueError:
            raise ConfigError(f"{field.name.upper()} must be {kind.__name__}, got {raw!r}") from None
    settings = Settings(**kwargs)
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    for name in ("server_workers", "queue_capacity", "bulk_workers", "bulk_size", "max_body_bytes",
                 "batch_max_events", "max_header_line_bytes", "max_header_bytes", "max_headers",
                 "max_connections"):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name.upper()} must be at least 1")
    for name in ("flush_interval_seconds", "pending_replay_interval_seconds", "open_search_timeout_seconds",
                 "pending_owner_timeout_seconds", "janitor_interval_seconds", "header_read_timeout_seconds",
                 "body_read_timeout_seconds"):
        if not getattr(settings, name) > 0:  # also refuses nan
            raise ConfigError(f"{name.upper()} must be positive")
    if not 0 <= settings.rate_limit_per_user < float("inf") or settings.rate_limit_burst < 0:
        raise ConfigError("RATE_LIMIT_PER_USER and RATE_LIMIT_BURST must be finite and not negative")
    if settings.sqlite_synchronous.upper() not in ("NORMAL", "FULL"):
        raise ConfigError(f"SQLITE_SYNCHRONOUS must be NORMAL or FULL, got {settings.sqlite_synchronous!r}")
    if settings.ack_mode not in ACK_MODES:
        raise ConfigError(f"ACK_MODE must be one of {', '.join(ACK_MODES)}, got {settings.ack_mode!r}")
    settings.sqlite_path  # noqa: B018 - validates the URL scheme early


def require_jwt_secret(settings: Settings) -> None:
    # The original accepted tokens signed with an empty key; we refuse to start instead.
    if not settings.jwt_secret:
        raise ConfigError("JWT_SECRET is empty or missing: set it in the environment or in .env")
