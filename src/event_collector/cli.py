"""The `event-collector` command: serve, token."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys

from .exceptions import ConfigError
from .settings import Settings, load_settings, require_jwt_secret

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_SECONDS_PER_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="event-collector", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP server and the delivery pipeline")
    token = commands.add_parser("token", help="print a JWT signed with JWT_SECRET, for trying the API")
    token.add_argument("--sub", required=True, help="the user id the token stands for")
    token.add_argument("--ttl", default="1h", type=_duration, help="lifetime, e.g. 90s, 30m, 1h, 7d (default 1h)")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        require_jwt_secret(settings)
    except ConfigError as exc:
        print(f"event-collector: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        from .api.auth import mint_token

        print(mint_token(settings.jwt_secret, args.sub, args.ttl))
        return 0
    return _serve(settings)


def _serve(settings: Settings) -> int:
    import uvicorn

    from .api.app import CollectorApp

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        CollectorApp(settings),
        host=settings.server_host,
        port=settings.server_port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the stop signal once its graceful shutdown is done; with this handler in place
    # the process then exits 0, telling a supervisor the stop was clean.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_after_graceful_stop)
    server.run()
    return 0 if server.started else 1


def _exit_after_graceful_stop(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _duration(text: str) -> int:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 30m, 1h, 7d)")
    return int(match.group(1)) * _SECONDS_PER_UNIT[match.group(2)]


if __name__ == "__main__":
    sys.exit(main())
