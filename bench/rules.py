"""CPU per event of RULES_FILE (docs/rules.md), in-process: `.venv/bin/python bench/rules.py`.

The single-event requests of bench/fastpath_cpu.py go through the real protocol and fast path (api/fastpath.py,
the same pipeline as the app's), into a collector in memory mode without shippers, twice: without RULES_FILE,
and with a plan of 50 events (a JSON Schema of six properties each), every transform on (bots flagged, an
e-mail hashed, a phone masked, a street dropped, every event sampled at 0.99, one dropped by name). The bodies
carry those properties, and each names one of the 50 events. Prints µs of CPU per event for both and their
difference (target: at most 20 µs more), rounds of each alternating. BENCH_CPU_REQUESTS (20,000) requests a
round, BENCH_REPEATS rounds (5) of each. With --json, the figures as a JSON object on the last line.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import fastpath_cpu  # noqa: E402 - its rounds through the real protocol, with this module's requests

REQUESTS = int(os.environ.get("BENCH_CPU_REQUESTS", "20000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
EVENTS = 50
SCHEMA = """
        properties:
          type: object
          required: [price, currency]
          properties:
            price: {type: number, minimum: 0}
            quantity: {type: integer, minimum: 1}
            currency: {type: string, enum: [EUR, USD, KRW]}
            email: {type: string, format: email}
            paid_at: {type: string, format: date-time}
            sku: {type: string, maxLength: 64}"""


def plan_text() -> str:
    events = "".join(f"\n      event_{n}:\n        policy: tag\n        sample: 0.99{SCHEMA}" for n in range(EVENTS))
    return (f"version: bench\nsources:\n  events:\n    unplanned: tag\n    bots: flag\n"
            f"    pii: {{email: hash, phone: mask, address.street: drop}}\n    events:\n"
            f"      heartbeat:\n        drop: true{events}\n")


def requests(token: str, count: int, round_: int) -> list[bytes]:
    made = []
    for n in range(count):
        body = (b'{"log_id":"rules-%d-%d","page":"/shop","event":"event_%d","label":"buy","target":"#cta",'
                b'"section":"hero","param":{"price":12.5,"quantity":2,"currency":"EUR","email":"jane@shop.example",'
                b'"paid_at":"2026-12-04T10:00:00Z","sku":"AB-1","phone":"+33 6 12 34 56 78",'
                b'"address":{"street":"1 rue de la Paix","city":"Paris"}}}' % (round_, n, n % EVENTS))
        made.append(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
                    + b"\r\nContent-Type: application/json\r\nuser-agent: Mozilla/5.0 (X11; Linux x86_64) "
                    b"Firefox/140.0\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return made


def measure(rules_file: str, round_: int) -> float:
    """One of fastpath_cpu's rounds, of this module's requests."""
    os.environ["RULES_FILE"] = rules_file
    fastpath_cpu.requests, fastpath_cpu.REQUESTS = requests, REQUESTS
    return asyncio.run(fastpath_cpu.one_round(round_))


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="event-collector-rules-cpu-")
    rules = Path(workdir) / "rules.yaml"
    rules.write_text(plan_text())
    os.environ.update({"JWT_SECRET": fastpath_cpu.SECRET, "ACK_MODE": "memory", "QUEUE_CAPACITY": str(REQUESTS + 1),
                       "DATABASE_URL": f"sqlite://{workdir}/pending.db", "SERVER_ENVIRONMENT": "benchrules",
                       "RULES_HASH_KEY": "bench-hash-key-" + "h" * 32})
    # Rounds alternate, so that a machine busier in one half of the run weighs on both figures alike.
    without, with_rules = [], []
    for round_ in range(REPEATS):
        without.append(measure("", round_))
        with_rules.append(measure(str(rules), round_))
    plain, ruled = statistics.median(without), statistics.median(with_rules)
    print(f"no rules: median {plain:.2f} µs of CPU per event (min {min(without):.2f}, max {max(without):.2f})")
    print(f"a {EVENTS}-event plan, every transform on: median {ruled:.2f} µs (min {min(with_rules):.2f}, "
          f"max {max(with_rules):.2f})")
    print(f"the rules cost {ruled - plain:.2f} µs of CPU per event ({REPEATS} rounds of {REQUESTS:,}; target ≤ 20)")
    if "--json" in sys.argv:  # for make bench (bench/figures_checks.py): its last line
        print(json.dumps({"no_rules_us": plain, "rules_us": ruled, "extra_us": ruled - plain}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
