"""CPU time of the fast path's own Python per single-event request, in-process: `.venv/bin/python bench/fastpath_cpu.py`.

Not part of `make bench` nor of CI. The protocol (api/protocol.py) is fed the bytes of bench/wrk/events.lua's
request, one at a time, over a transport that only keeps what is written; the collector runs in memory mode
without its shippers (nothing leaves the buffer, which is sized to hold every event). What it measures is the
work between a read and its write, without the sockets and the event loop around them, so it is the same on a
busy machine as on a quiet one, where wrk's figures are not: the figure to compare two versions of the code
by. BENCH_CPU_REQUESTS (50,000) requests a round, BENCH_REPEATS rounds (5); prints µs per request.
BENCH_SRC=<a src directory> measures that version of the code instead. BENCH_MODE=durable measures durable
mode (each request's journal write included, to a temporary directory); BENCH_PROFILE=1 prints the cProfile
of one more round, sorted by own time.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

REQUESTS = int(os.environ.get("BENCH_CPU_REQUESTS", "50000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
SECRET = "bench-secret-" + "b" * 40

# BENCH_SRC: another version's src directory (e.g. `git archive` of an older commit), to compare with it.
sys.path.insert(0, os.environ.get("BENCH_SRC") or str(Path(__file__).resolve().parent.parent / "src"))


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.answers = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.answers += 1
        self.last = data

    def is_closing(self) -> bool:
        return False

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def requests(token: str, count: int, round_: int) -> list[bytes]:
    """bench/wrk/events.lua's requests: the same headers and body, a log_id of their own."""
    made = []
    for n in range(count):
        body = (b'{"log_id":"cpu-%d-%d","page":"/home","event":"click","label":"buy","target":"#cta",'
                b'"section":"hero","param":{"price":1200,"currency":"KRW","items":["a","b"]}}' % (round_, n))
        made.append(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
                    + b"\r\nContent-Type: application/json\r\ndevice-uuid: bench-device\r\napp-version: 1.0.0\r\n"
                    b"os-version: bench-os\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return made


async def one_round(round_: int, profiled: bool = False) -> float:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from event_collector.api.app import CollectorApp
    from event_collector.api.auth import mint_token
    from event_collector.api.protocol import CollectorHttpProtocol, ConnectionLimits
    from event_collector.settings import load_settings

    settings = load_settings()
    app = CollectorApp(settings)
    await app.collector.store.open()  # the journal, in durable mode
    app.collector.accepting = True  # not started: no shipper takes events out of the buffer
    config = Config(app, log_config=None, proxy_headers=False)
    config.load()
    state = ServerState()
    state.default_headers = [(b"date", b"Sat, 28 Nov 2026 12:00:00 GMT"), (b"server", b"uvicorn")]
    protocol = CollectorHttpProtocol(config=config, server_state=state, app_state={},
                                     limits=ConnectionLimits.from_settings(settings, 1000))
    transport = _Transport()
    protocol.connection_made(transport)
    batch = requests(mint_token(SECRET, "bench-user", 3600), REQUESTS, round_)
    profile = cProfile.Profile() if profiled else None
    started = time.process_time()
    if profile is not None:
        profile.enable()
    for request in batch:
        protocol.data_received(request)
    if profile is not None:
        profile.disable()
    spent = time.process_time() - started
    assert transport.answers == REQUESTS and b'"created"' in transport.last, transport.last
    protocol.connection_lost(None)
    await app.collector.store.close()
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    return spent / REQUESTS * 1e6


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="event-collector-fastpath-cpu-")
    mode = os.environ.get("BENCH_MODE", "memory")
    os.environ.update({"JWT_SECRET": SECRET, "ACK_MODE": mode, "QUEUE_CAPACITY": str(REQUESTS + 1),
                       "DATABASE_URL": f"sqlite://{workdir}/pending.db", "SERVER_ENVIRONMENT": "benchcpu"})
    figures = [asyncio.run(one_round(n)) for n in range(REPEATS)]
    if os.environ.get("BENCH_PROFILE") == "1":
        asyncio.run(one_round(REPEATS, profiled=True))
    print(f"fast path, {mode} mode, µs of CPU per request: median {statistics.median(figures):.2f} "
          f"(min {min(figures):.2f}, max {max(figures):.2f}; {REPEATS} rounds of {REQUESTS:,})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
