"""All settings, read from the environment once (a `.env` file fills in what the environment lacks)."""

from __future__ import annotations

import math
import os
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Annotated, Literal, Mapping

import msgspec
from dotenv import dotenv_values
from msgspec import Meta

from .exceptions import ConfigError

ACK_MODES = ("durable", "memory", "kafka")
Network = IPv4Network | IPv6Network

# Constraints, checked when the settings are read: a value that would break the process (a zero timeout
# that spins the loop, zero attempts that dead-letter everything, nan) stops start-up naming the variable.
_AtLeastOne = Annotated[int, Meta(ge=1)]
_Port = Annotated[int, Meta(ge=0, le=65535)]
_NotNegative = Annotated[int, Meta(ge=0)]
# Positive and finite (nan fails every comparison, so it is refused too); a week bounds any interval.
_Seconds = Annotated[float, Meta(gt=0, le=7 * 86400)]
_GraceSeconds = Annotated[float, Meta(ge=0, le=86400)]
_Days = Annotated[float, Meta(gt=0, le=36500)]
_Rate = Annotated[float, Meta(ge=0, le=1e9)]
# "*" or scheme://host[:port] origins, comma-separated; a path (even "/") never matches a browser's Origin.
_ORIGIN = r"(\*|[A-Za-z][A-Za-z0-9+.-]*://[^/\s,*]+)"
_Origins = Annotated[str, Meta(pattern=rf"^\s*({_ORIGIN}(\s*,\s*{_ORIGIN})*)?\s*$")]
# It goes into index names, which OpenSearch wants lowercase and at most 255 bytes: lowercase ASCII (a
# non-ASCII lowercase check and a byte count would allow little more), so 100 characters are 100 bytes.
_Environment = Annotated[str, Meta(min_length=1, max_length=100, pattern=r'^[a-z0-9.][a-z0-9._-]*$')]
# Kafka's rule for topic names (or empty for the default).
_KafkaName = Annotated[str, Meta(max_length=249, pattern=r'^[A-Za-z0-9._-]*$')]


def _available_cpus() -> int:
    """CPUs this process may use: its affinity, lowered by a cgroup CPU quota (a container's limit)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs' worth of time the cgroup may use (e.g. 1.5 for `--cpus 1.5`), or None when unlimited."""
    try:  # cgroup v2
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # The original Rust collector's names keep their meaning.
    open_search_dns: str = "http://localhost:9200"
    server_host: str = "0.0.0.0"
    server_port: _Port = 3000
    # Worker processes, each running the whole pipeline over the one shared pending store. The default is
    # the CPUs this process may use, a container's CPU quota included.
    server_workers: _AtLeastOne = msgspec.field(default_factory=_available_cpus)
    jwt_secret: str = ""
    server_environment: _Environment = "local"
    database_url: str = "sqlite://sqlite3.db"
    # The connection to OpenSearch (shipper/connection.py, docs/opensearch.md): OPEN_SEARCH_DNS may name
    # several nodes of one cluster, comma-separated; credentials never appear in a log line or message.
    open_search_username: str = ""
    open_search_password: str = ""
    open_search_auth: Literal["basic", "sigv4"] = "basic"
    open_search_aws_service: Literal["es", "aoss"] = "es"
    aws_region: str = ""
    open_search_ca_certs: str = ""
    open_search_client_cert: str = ""
    open_search_client_key: str = ""
    open_search_verify_certs: bool = True
    # Pipeline.
    queue_capacity: _AtLeastOne = 100_000
    bulk_workers: _AtLeastOne = 10
    bulk_size: _AtLeastOne = 1000
    # A bulk request's documents in bytes at most (an event larger than that goes alone); docs/delivery.md.
    bulk_max_bytes: Annotated[int, Meta(ge=64 * 1024, le=1024 * 1024 * 1024)] = 5 * 1024 * 1024
    # How many of BULK_WORKERS may send at once: adapted to OpenSearch's latency, or all of them always.
    bulk_adaptive_concurrency: bool = True
    flush_interval_seconds: _Seconds = 10.0
    # How long a partial batch waits while every sender is idle; at least FLUSH_INTERVAL_SECONDS turns it off.
    bulk_linger_seconds: _GraceSeconds = 0.1
    pending_replay_interval_seconds: _Seconds = 60.0
    shutdown_grace_seconds: _GraceSeconds = 30.0
    # After a stop signal, keep serving this long with /readyz answering 503 before the listener closes,
    # so that load balancers take the replica out first; part of SHUTDOWN_GRACE_SECONDS.
    shutdown_delay_seconds: _GraceSeconds = 0.0
    open_search_timeout_seconds: _Seconds = 30.0
    # Input limits.
    max_body_bytes: _AtLeastOne = 1024 * 1024
    batch_max_events: _AtLeastOne = 1000
    body_read_timeout_seconds: _Seconds = 30.0
    # Connection-level limits for a public endpoint (docs/security.md): enforced by api/protocol.py
    # before a request reaches the app, so one client cannot hold memory, CPU or sockets.
    max_header_line_bytes: _AtLeastOne = 16 * 1024
    max_header_bytes: _AtLeastOne = 64 * 1024
    max_headers: _AtLeastOne = 100
    header_read_timeout_seconds: _Seconds = 10.0
    max_connections: _AtLeastOne = 10_000
    # Events per second each user (token `sub`) may send, with a burst; 0 turns the limit off.
    rate_limit_per_user: _Rate = 0.0
    rate_limit_burst: _NotNegative = 0
    # Receipts requests (POST /v1/receipts) per second each caller (user or source) may make, with a burst
    # of two seconds' worth; 0 turns the limit off.
    receipts_rate_limit: _Rate = 10.0
    retry_backoff_base_seconds: _Seconds = 1.0
    retry_backoff_max_seconds: _Seconds = 600.0
    max_delivery_attempts: _AtLeastOne = 20
    # A process whose heartbeat file is older than this is taken for dead, and its leased rows are adopted.
    pending_owner_timeout_seconds: _Seconds = 30.0
    pending_retention_days: _Days = 7.0
    dead_letter_retention_days: _Days = 30.0
    # Bytes of pending documents (the backlog) at which new events are refused; dead letters have their own
    # bound, the oldest dropped first by the janitor.
    pending_max_bytes: _AtLeastOne = 1 << 30
    # Space kept free beside the store so that a backlog can drain from a full disk (pending/reserve.py); 0
    # turns it off. It must hold SQLite's write-ahead log before a checkpoint (about 4 MiB) and two claims.
    pending_reserve_bytes: _NotNegative = 16 << 20
    dead_letter_max_bytes: _AtLeastOne = 256 << 20
    janitor_interval_seconds: _Seconds = 300.0
    ack_mode: Literal["durable", "memory", "kafka"] = "durable"
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # Durable mode's in-flight journal rolls to a new segment file at this size; a rolled segment is
    # unlinked once its events and those of every segment before it are settled (docs/delivery.md,
    # "Store layout").
    journal_segment_bytes: Annotated[int, Meta(ge=4096, le=1 << 30)] = 8 << 20
    # Kafka (ACK_MODE=kafka and `event-collector index`, docs/scale.md); librdkafka's settings come from
    # these in kafka/config.py. Empty topic, dead-letter topic and group take the defaults below.
    kafka_bootstrap_servers: str = ""
    kafka_topic: _KafkaName = ""
    kafka_dead_letter_topic: _KafkaName = ""
    kafka_group_id: str = ""
    kafka_security_protocol: Literal["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"] = "plaintext"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_ca_location: str = ""
    kafka_ssl_certificate_location: str = ""
    kafka_ssl_key_location: str = ""
    kafka_ssl_key_password: str = ""
    # How long an event may wait for the brokers' acknowledgement before the request is answered 503.
    kafka_produce_timeout_seconds: _Seconds = 10.0
    # Keys beyond JWT_SECRET (api/keys.py): public keys for RS256/ES256 tokens, and claims to insist on.
    jwt_jwks_file: str = ""
    jwt_issuer: str = ""
    jwt_audience: str = ""
    # The tracking API's sources and their write keys (sources.py, README "The tracking API"); empty: none.
    sources_file: str = ""
    # A tracking plan checked at accept time (docs/rules.md); empty: no rules, every event as sent.
    rules_file: str = ""
    # The key of the rules' PII `hash` action (keyed HMAC-SHA256): a value hashed under it is the same across
    # events and never readable without it.
    rules_hash_key: str = ""
    # Web pages of these origins may send events (api/cors.py); empty: CORS is off.
    cors_allowed_origins: _Origins = ""
    # uvicorn's access log, with query strings (a beacon's token) redacted (logs.QueryRedactingFilter).
    access_log: bool = False
    # Single events answered inside the HTTP protocol, below ASGI (docs/http.md); false sends every request
    # through the ASGI app.
    fast_path: bool = True
    # Enrichment (docs/enrichment.md): the client's address, place and user agent.
    trusted_proxies: str = ""
    trusted_proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    ip_anonymize: Literal["off", "mask", "drop"] = "off"
    enrich_user_agent: bool = False
    geoip_database: str = ""
    # For tests only: shifts the clock that stamps received_at (docs/client-time.md). Ten years either way.
    test_clock_offset_seconds: Annotated[float, Meta(ge=-3.2e8, le=3.2e8)] = 0.0
    # Logs (logs.py): one JSON object per line, or text; None picks text on a terminal, JSON otherwise.
    log_format: Literal["json", "text"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @property
    def sqlite_path(self) -> str:
        if not self.database_url.startswith("sqlite://"):
            raise ConfigError(f"DATABASE_URL must start with sqlite:// (got {self.database_url!r})")
        return self.database_url.removeprefix("sqlite://") or "sqlite3.db"

    @property
    def kafka_topic_name(self) -> str:
        return self.kafka_topic or f"events_{self.server_environment}"

    @property
    def kafka_dead_letter_topic_name(self) -> str:
        return self.kafka_dead_letter_topic or f"{self.kafka_topic_name}.dead-letter"

    @property
    def kafka_group(self) -> str:
        return self.kafka_group_id or f"event-collector-{self.server_environment}"

    @property
    def opensearch_url(self) -> str:
        return self.open_search_dns.rstrip("/")

    def for_one_worker(self, slot: int) -> "Settings":
        """The share of worker `slot` (0 to SERVER_WORKERS - 1): QUEUE_CAPACITY and BULK_WORKERS are totals
        over all worker processes, shared out so that the shares add up to them. Every worker needs one
        shipper, so a BULK_WORKERS below SERVER_WORKERS becomes one per worker."""
        return msgspec.structs.replace(self, queue_capacity=max(1, _share(self.queue_capacity, self.server_workers, slot)),
                                       bulk_workers=max(1, _share(self.bulk_workers, self.server_workers, slot)))


def _share(total: int, parts: int, slot: int) -> int:
    return total // parts + (1 if slot < total % parts else 0)


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
    """Build the settings from `environ` (default: the process environment) over an optional `.env`."""
    values: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ if environ is None else environ)

    raw = {field.name: values[field.name.upper()] for field in msgspec.structs.fields(Settings)
           if field.name.upper() in values}
    if "kafka_security_protocol" in raw:
        raw["kafka_security_protocol"] = raw["kafka_security_protocol"].lower()
    if "kafka_sasl_mechanism" in raw:
        raw["kafka_sasl_mechanism"] = raw["kafka_sasl_mechanism"].upper()
    if "sqlite_synchronous" in raw:
        raw["sqlite_synchronous"] = raw["sqlite_synchronous"].upper()
    for lowercase in ("trusted_proxy_header", "ip_anonymize"):
        if lowercase in raw:
            raw[lowercase] = raw[lowercase].lower()
    if "log_level" in raw:
        raw["log_level"] = raw["log_level"].upper()
    if "log_format" in raw:
        raw["log_format"] = raw["log_format"].lower() or None
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(str(exc), raw)) from None
    settings.sqlite_path  # noqa: B018 - validates the URL scheme early
    parse_trusted_proxies(settings.trusted_proxies)
    if settings.retry_backoff_max_seconds < settings.retry_backoff_base_seconds:
        raise ConfigError("RETRY_BACKOFF_MAX_SECONDS must not be below RETRY_BACKOFF_BASE_SECONDS")
    if settings.ack_mode == "kafka" and not settings.kafka_bootstrap_servers.strip():
        raise ConfigError("ACK_MODE=kafka needs KAFKA_BOOTSTRAP_SERVERS (host:port of one or more brokers)")
    if settings.shutdown_delay_seconds and settings.shutdown_delay_seconds >= settings.shutdown_grace_seconds:
        raise ConfigError("SHUTDOWN_DELAY_SECONDS must be below SHUTDOWN_GRACE_SECONDS: it is spent from the "
                          "stop's budget, and the drain needs what is left")
    return settings


# Said in words where msgspec would quote a regular expression.
_EXPECTED = {"server_environment": 'part of an index name: lowercase, none of \\ / * ? " < > | , # : or space, '
                                   "not starting with _ - +",
             "cors_allowed_origins": "comma-separated origins such as https://app.example.com "
                                     "(scheme://host[:port], no path), or *"}


def _explain(message: str, raw: Mapping[str, str]) -> str:
    """msgspec's "Expected `int` >= 1 - at `$.bulk_size`" as "BULK_SIZE='0': expected `int` >= 1"."""
    problem, _, where = message.partition(" - at `$.")
    name = where.rstrip("`")
    if not name:
        return message
    expected = _EXPECTED.get(name) or f"{problem[0].lower()}{problem[1:]}"
    return f"{name.upper()}={raw.get(name, '')!r}: {expected}"


def require_jwt_secret(settings: Settings) -> None:
    # The original accepted tokens signed with an empty key; we refuse to start instead. Public keys alone
    # (JWT_JWKS_FILE) are enough to serve; api/keys.py checks what each variable holds.
    if not settings.jwt_secret and not settings.jwt_jwks_file and not settings.sources_file:
        raise ConfigError("JWT_SECRET is empty or missing: set it in the environment or in .env (or serve the "
                          "tracking API alone with SOURCES_FILE)")


def parse_trusted_proxies(text: str) -> tuple[Network, ...]:
    """TRUSTED_PROXIES: addresses or CIDRs, separated by commas or spaces (enrich/client_ip.py uses them)."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            network = ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"TRUSTED_PROXIES={text!r}: {item!r} is not an address or a CIDR network") from None
        written = ip_address(item.partition("/")[0])
        if network.prefixlen < 96 and written.version == 6 and written.ipv4_mapped is not None:
            # ::ffff:10.0.0.0/8 would silently mean ::/8, a range of IPv6 addresses.
            raise ConfigError(f"TRUSTED_PROXIES={text!r}: write {item!r} as an IPv4 network")
        networks.append(_as_ipv4_if_mapped(network))
    return tuple(networks)


def _as_ipv4_if_mapped(network: Network) -> Network:
    """A dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d: a network written that way is an IPv4 one."""
    if network.version == 6 and network.prefixlen >= 96 and network.network_address.ipv4_mapped is not None:
        return IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network
