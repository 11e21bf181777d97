"""The `event-collector` command: serve, token, tools for the pending and dead-letter stores, and verify."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import re
import signal
import sys
import tempfile

from .exceptions import ConfigError, OpenSearchUnavailable
from .settings import Settings, load_settings, require_jwt_secret
from .verify.arguments import add_verify_parser

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="event-collector", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP server and the delivery pipeline")
    commands.add_parser("index", help="consume KAFKA_TOPIC in the group KAFKA_GROUP_ID and index it into OpenSearch")
    token = commands.add_parser("token", help="print a JWT signed with JWT_SECRET, for trying the API")
    token.add_argument("--sub", required=True, help="the user id the token stands for")
    token.add_argument("--ttl", default="1h", type=_duration, help="lifetime, e.g. 90s, 30m, 1h, 7d (default 1h)")
    token.add_argument("--kid", help="the key of a JWT_SECRET key set to sign with (its kid goes in the token)")

    pending = commands.add_parser("pending", help="inspect or replay the events waiting for delivery")
    pending_commands = pending.add_subparsers(dest="action", required=True)
    pending_commands.add_parser("stats", help="rows, bytes, oldest age, attempts histogram")
    pending_commands.add_parser("replay", help="deliver every pending event now")

    dead = commands.add_parser("dead-letter", help="inspect, requeue or purge events OpenSearch refused")
    dead_commands = dead.add_subparsers(dest="action", required=True)
    listing = dead_commands.add_parser("list", help="show dead letters, oldest first")
    listing.add_argument("--reason", help="only those whose reason contains this text (any case)")
    listing.add_argument("--limit", type=_positive_int, default=100, help="at most this many (default 100)")
    listing.add_argument("--kafka", action="store_true",
                         help="KAFKA_DEAD_LETTER_TOPIC (the default with ACK_MODE=kafka)")
    requeue = dead_commands.add_parser("requeue", help="move dead letters back to pending, due now")
    requeue.add_argument("--reason", help="only those whose reason contains this text (any case)")
    requeue.add_argument("--kafka", action="store_true",
                         help="from KAFKA_DEAD_LETTER_TOPIC to KAFKA_TOPIC (the default with ACK_MODE=kafka)")
    purge = dead_commands.add_parser("purge", help="delete dead letters")
    purge.add_argument("--older-than", type=_days, default=0.0, metavar="DAYS",
                       help="only those that failed more than DAYS days ago (default: all)")
    purge.add_argument("--kafka", action="store_true",
                       help="not for KAFKA_DEAD_LETTER_TOPIC: its retention ages letters out")
    verify = add_verify_parser(commands)
    rules = commands.add_parser("rules", help="check a RULES_FILE before deploying it (docs/rules.md)")
    rules_commands = rules.add_subparsers(dest="action", required=True)
    check = rules_commands.add_parser("check", help="the file's checks, and its typed fields against a live cluster")
    check.add_argument("file", help="the rules file (YAML)")
    check.add_argument("--opensearch", metavar="URL",
                       help="hold the typed fields against this cluster's existing indices (default: file only)")
    args = parser.parse_args(argv)
    if args.command == "verify":
        # Runs against a deployment over HTTP, from anywhere: the collector's own settings do not apply.
        from .verify.run import verify_command

        return verify_command(args, verify.error)

    try:
        settings = load_settings()
        if args.command in ("serve", "token"):
            require_jwt_secret(settings)
            from .api.keys import KeyRing

            KeyRing.from_settings(settings)  # JWT_SECRET's key set and JWT_JWKS_FILE, checked before serving
        if args.command == "serve" and settings.ack_mode == "kafka":
            from .kafka.config import connection_config

            connection_config(settings)  # brokers, TLS files, SASL user: stop now if wrong
        elif args.command == "serve" or (args.command, getattr(args, "action", None)) == ("pending", "replay"):
            from .shipper.connection import connection_from_settings

            connection_from_settings(settings)  # nodes, credentials, TLS files, AWS chain: stop now if wrong
        if args.command == "index":
            from .kafka.config import connection_config
            from .shipper.connection import connection_from_settings

            connection_config(settings)  # brokers, TLS files, SASL: stop now if wrong
            connection_from_settings(settings)
    except ConfigError as exc:
        print(f"event-collector: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        from .api.auth import mint_token
        from .exceptions import AuthError

        if not settings.jwt_secret:
            print("event-collector: JWT_SECRET is empty: tokens of JWT_JWKS_FILE's keys are minted by their issuer",
                  file=sys.stderr)
            return 2
        try:
            print(mint_token(settings.jwt_secret, args.sub, args.ttl, args.kid))
        except AuthError as exc:
            print(f"event-collector: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "serve":
        return _serve(settings)
    if args.command == "index":
        return _index(settings)
    if args.command == "rules":
        return asyncio.run(_rules_check(settings, args.file, args.opensearch))
    return _tool(settings, args)


async def _rules_check(settings: Settings, path: str, opensearch_url: str | None) -> int:
    """serve's checks of a RULES_FILE (with this environment's settings): 0 and its version, or 1 and why not."""
    from .rules.book import Rules, source_family
    from .rules.cluster import mapping_conflicts
    from .shipper.client import OpenSearchClient
    from .sources import Sources

    try:
        book = Rules(path, settings.rules_hash_key).book
        sources = Sources(settings.sources_file, settings.server_environment).book
    except ConfigError as exc:
        print(f"event-collector: {exc}", file=sys.stderr)
        return 1
    where = " (file only: no --opensearch)"
    if opensearch_url:
        client = OpenSearchClient(opensearch_url, settings.open_search_timeout_seconds)
        await client.open()
        family_of = lambda name: source_family(name, sources, settings.server_environment)  # noqa: E731
        try:
            conflicts = await mapping_conflicts(book, client.request, family_of)
        except OpenSearchUnavailable as exc:
            conflicts = [f"the live mappings could not be read: {exc}"]
        finally:
            await client.close()
        if conflicts:
            print("\n".join(f"event-collector: {path}: {conflict}" for conflict in conflicts), file=sys.stderr)
            return 1
        where = f"; no conflict with the indices at {opensearch_url}"
    print(f"{path}: version {book.version}, {len(book.sources)} sources{where}")
    return 0


def _tool(settings: Settings, args: argparse.Namespace) -> int:
    from . import tools
    from .exceptions import CollectorError

    if args.command == "dead-letter" and (getattr(args, "kafka", False) or settings.ack_mode == "kafka"):
        return _kafka_dead_letter(settings, args)
    commands = {
        ("pending", "stats"): lambda: tools.pending_stats(settings),
        ("pending", "replay"): lambda: tools.pending_replay(settings),
        ("dead-letter", "list"): lambda: tools.dead_letter_list(settings, args.reason, args.limit),
        ("dead-letter", "requeue"): lambda: tools.dead_letter_requeue(settings, args.reason),
        ("dead-letter", "purge"): lambda: tools.dead_letter_purge(settings, args.older_than),
    }
    try:
        print(asyncio.run(commands[args.command, args.action]()))
    except CollectorError as exc:
        print(f"event-collector: {exc}", file=sys.stderr)
        return 1
    return 0


def _kafka_dead_letter(settings: Settings, args: argparse.Namespace) -> int:
    """The dead-letter commands on KAFKA_DEAD_LETTER_TOPIC (docs/scale-indexer.md)."""
    from .exceptions import CollectorError
    from .kafka import dead_letter

    if args.action == "purge":
        print("event-collector: the Kafka dead-letter topic is not purged by command: its retention "
              "(retention.ms of KAFKA_DEAD_LETTER_TOPIC) ages letters out", file=sys.stderr)
        return 2
    try:
        if args.action == "list":
            print(asyncio.run(dead_letter.dead_letter_list(settings, args.reason, args.limit)))
        else:
            print(asyncio.run(dead_letter.dead_letter_requeue(settings, args.reason)))
    except (CollectorError, ConfigError) as exc:
        print(f"event-collector: {exc}", file=sys.stderr)
        return 1
    return 0


def _index(settings: Settings) -> int:
    """`event-collector index`: exits 0 after a stop by SIGTERM/SIGINT, 1 when the indexer failed."""
    from .kafka.indexer import index

    logging.config.dictConfig(_log_config(settings))
    try:
        return asyncio.run(index(settings, settings.shutdown_grace_seconds))
    except ConfigError as exc:
        print(f"event-collector: {exc}", file=sys.stderr)
        return 2


def _serve(settings: Settings) -> int:
    import functools

    import uvicorn

    from .api.connection_limits import ConnectionLimits, connection_cap
    from .api.protocol import CollectorHttpProtocol
    from .metrics import MULTIPROCESS_DIR_VARIABLE
    from .pending import open_store

    log_config = _log_config(settings)
    logging.config.dictConfig(log_config)
    # Create the schema (or move a damaged file aside) once, before any worker process opens the store.
    # ACK_MODE=kafka keeps no store.
    if settings.ack_mode != "kafka":
        asyncio.run(_open_and_close(open_store(settings, recover_damaged=True)))
    # Raised here, once, so every worker process inherits the open-file limit and the warning is not repeated.
    limits = ConnectionLimits.from_settings(settings, connection_cap(settings.max_connections))
    options = dict(
        host=settings.server_host,
        port=settings.server_port,
        loop="uvloop",
        # httptools with header limits, a header timeout, a connection cap and lingering close
        # (api/protocol.py); uvicorn's own limit_concurrency answers 503 only once a head is complete and
        # without Retry-After, so it is not used.
        http=functools.partial(CollectorHttpProtocol, limits=limits),
        lifespan="on",
        # Off by default; when on, query strings are redacted from it (a beacon's ?token=).
        access_log=settings.access_log,
        proxy_headers=False,
        server_header=False,
        # The whole stop keeps within SHUTDOWN_GRACE_SECONDS: requests in progress get at most that, the
        # drain what is left of it (Collector.watch_stop_signals); uvicorn's part starts after
        # SHUTDOWN_DELAY_SECONDS. uvicorn reads 0 as "no limit".
        timeout_graceful_shutdown=(settings.shutdown_grace_seconds - settings.shutdown_delay_seconds) or 0.001,
        log_config=log_config,
    )
    if settings.server_workers == 1:
        from .api.app import CollectorApp

        app = CollectorApp(settings)
        # uvicorn re-raises the stop signal once its graceful shutdown is done; this handler then exits 0
        # when the stop kept every acknowledged event (shipped or stored), 1 when it could not or was
        # skipped (a second Ctrl-C), telling a supervisor what happened.
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, lambda signum, frame: _exit(app.collector.stopped_cleanly))
        server = uvicorn.Server(uvicorn.Config(app, **options))
        server.run()
        return 0 if server.started and app.collector.stopped_cleanly else 1
    with tempfile.TemporaryDirectory(prefix="event-collector-metrics-") as metrics_dir:
        os.environ[MULTIPROCESS_DIR_VARIABLE] = metrics_dir
        uvicorn.run("event_collector.api.app:create_app", factory=True, workers=settings.server_workers, **options)
    return 0


def _log_config(settings: Settings) -> dict:
    """LOG_FORMAT (text on a terminal, JSON otherwise: a person reads the one, a log shipper the other),
    LOG_LEVEL, and the secrets no line may show."""
    from urllib.parse import urlsplit

    from .logs import log_config

    log_format = settings.log_format or ("text" if sys.stderr.isatty() else "json")
    # OPEN_SEARCH_DNS may name several nodes, each with its user info; OPEN_SEARCH_PASSWORD comes with the
    # connection settings (issue 9, section 1) and is looked up so that this holds before and after them.
    secrets = [settings.jwt_secret, getattr(settings, "open_search_password", None) or ""]
    secrets += [urlsplit(url.strip()).password or "" for url in settings.open_search_dns.split(",")]
    secrets += [settings.kafka_sasl_password, settings.kafka_ssl_key_password, settings.rules_hash_key]
    return log_config(log_format, settings.log_level, secrets)


async def _open_and_close(store) -> None:
    await store.open()
    await store.close()


def _exit(stopped_cleanly: bool) -> None:
    if not stopped_cleanly:
        logging.getLogger("event_collector").critical(
            "stopped without keeping every acknowledged event: see the log above")
    raise SystemExit(0 if stopped_cleanly else 1)


def _duration(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 1h, 7d)")
    return int(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days >= 0:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}")
    return days


if __name__ == "__main__":
    sys.exit(main())
