"""verify's command line: the options, checked once into a Plan (an argparse error exits 2 with its message)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

# Bounds that keep a typo from becoming a load test: every event is remembered until the report.
MAX_EVENTS = 1_000_000
MAX_RATE_PER_SECOND = 100_000.0


@dataclass(frozen=True)
class Plan:
    url: str                      # the collector's base URL, no trailing slash
    events: int
    rate_per_second: float
    token: str | None             # the JWT API (POST /events) ...
    write_key: str | None         # ... or the tracking API (POST /v1/track)
    opensearch: str | None        # checked through OpenSearch when set, through receipts otherwise
    opensearch_auth: tuple[str, str] | None
    index_pattern: str
    deadline_seconds: float
    poll_interval_seconds: float
    retries: int
    timeout_seconds: float
    concurrency: int
    verify_tls: bool
    json: bool

    @property
    def route(self) -> str:
        return "/events" if self.token is not None else "/v1/track"


def add_verify_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    verify = commands.add_parser(
        "verify", help="send N events through a deployment and check each one answered 2xx is indexed exactly once",
        description="Exit status: 0 every event answered 2xx was indexed once; 1 some were lost or duplicated; "
                    "2 usage error, or the check could not be made (docs/verify.md).")
    verify.add_argument("url", type=http_url,
                        help="the collector's public base URL, e.g. https://collector.example.com")
    verify.add_argument("--events", type=_bounded_int(1, MAX_EVENTS), default=1000, metavar="N",
                        help="events to send (default 1000)")
    verify.add_argument("--rate", type=_bounded_float(MAX_RATE_PER_SECOND), default=100.0, metavar="R",
                        help="events per second, paced steadily (default 100)")
    credentials = verify.add_mutually_exclusive_group(required=True)
    credentials.add_argument("--token", metavar="JWT", help="send to POST /events with this Bearer token")
    credentials.add_argument("--write-key", metavar="KEY", help="send to POST /v1/track with this source's write key")
    verify.add_argument("--opensearch", type=http_url, metavar="URL",
                        help="check in OpenSearch (user info in the URL allowed); without it, through the "
                             "collector's receipts, which cannot see duplicates")
    verify.add_argument("--opensearch-user", help="OpenSearch basic-auth user (instead of the URL's user info)")
    verify.add_argument("--opensearch-password", help="OpenSearch basic-auth password")
    verify.add_argument("--index-pattern", default=None,
                        help="the indices to search for the events (default events_*, every family)")
    verify.add_argument("--deadline", type=_bounded_float(86_400.0), default=120.0, metavar="SECONDS",
                        help="how long after the last send to wait for events to be indexed (default 120)")
    verify.add_argument("--poll-interval", type=_bounded_float(60.0), default=1.0, metavar="SECONDS",
                        help="time between checks; the resolution of the delivery latency (default 1)")
    verify.add_argument("--retries", type=_bounded_int(0, 100), default=0, metavar="K",
                        help="resend an event without a 2xx up to K times with the same id, as an SDK would "
                             "(default 0: a resend could hide a loss)")
    verify.add_argument("--timeout", type=_bounded_float(300.0), default=10.0, metavar="SECONDS",
                        help="per request (default 10)")
    verify.add_argument("--concurrency", type=_bounded_int(1, 1000), default=64,
                        help="requests in flight at most (default 64)")
    verify.add_argument("--insecure", action="store_true",
                        help="do not verify TLS certificates (collector and OpenSearch)")
    verify.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return verify


def plan_from(args: argparse.Namespace, parser_error) -> Plan:
    """The Plan of parsed `args`; `parser_error(message)` reports what argparse alone cannot check (exits 2)."""
    opensearch, auth = None, None
    if args.opensearch is not None:
        opensearch, auth = _split_user_info(args.opensearch)
        if args.opensearch_user is not None or args.opensearch_password is not None:
            if auth is not None:
                parser_error("give OpenSearch's credentials once: in the URL or with --opensearch-user")
            if args.opensearch_user is None or args.opensearch_password is None:
                parser_error("--opensearch-user and --opensearch-password go together")
            auth = (args.opensearch_user, args.opensearch_password)
    elif args.opensearch_user or args.opensearch_password or args.index_pattern:
        parser_error("--opensearch-user, --opensearch-password and --index-pattern need --opensearch")
    for name, value in (("--token", args.token), ("--write-key", args.write_key)):
        if value is not None and (not value.strip() or any(c in value for c in "\r\n")):
            parser_error(f"{name} is empty or spans lines")
    return Plan(
        url=args.url, events=args.events, rate_per_second=args.rate, token=args.token, write_key=args.write_key,
        opensearch=opensearch, opensearch_auth=auth, index_pattern=args.index_pattern or "events_*",
        deadline_seconds=args.deadline, poll_interval_seconds=args.poll_interval, retries=args.retries,
        timeout_seconds=args.timeout, concurrency=args.concurrency, verify_tls=not args.insecure, json=args.json)


def http_url(text: str) -> str:
    """An http(s) URL with a host and no query or fragment, without its trailing slash."""
    try:
        parts = urlsplit(text.strip())
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if not port_ok or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r} (e.g. https://collector.example.com)")
    return text.strip().rstrip("/")


def _split_user_info(url: str) -> tuple[str, tuple[str, str] | None]:
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    bare = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return bare, (unquote(parts.username), unquote(parts.password or ""))


def _bounded_int(low: int, high: int):
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"not a whole number from {low:,} to {high:,}: {text!r}")
        return int(text)
    return parse


def _bounded_float(high: float):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"not a number above 0 and at most {high:,g}: {text!r}")
        return value
    return parse
