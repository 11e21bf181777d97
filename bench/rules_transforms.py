"""What a tracking plan's transforms cost per event, in-process (rules/transforms.py), run by hand:

    .venv/bin/python bench/rules_transforms.py

A realistic event: 10 properties (one nested address), 3 PII rules (hash, mask, drop), bots flag, and the
event sampled at 0.5 (so every event pays the hash). Each transform alone, then all four in the pipeline's
order as rules/judge.py calls them, against the same loop with no rules. The bot check is timed warm (apps
send few distinct user agents, and verdicts are cached) and, once, cold (a user agent never seen).
Not part of `make bench` (bench/run.py).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from event_collector.rules.transforms import SourceTransforms  # noqa: E402

EVENTS = 5_000
# Many short runs, and the fastest kept, in CPU time: on a shared machine the median measures the neighbours.
REPEATS = 30
NAME = "purchase"
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "okhttp/4.12.0",
]
SECTION = {
    "bots": "flag",
    "pii": {"email": "hash", "phone": "mask", "address.street": "drop"},
    "events": {NAME: {"sample": 0.5}},
}


def properties(n: int) -> dict[str, Any]:
    return {"email": f"user{n}@example.com", "phone": "+33612345678", "price": 12.5 + n % 7, "currency": "EUR",
            "sku": f"SKU-{n % 97}", "quantity": 1 + n % 3, "coupon": None, "paid_at": "2026-12-04T10:15:02Z",
            "first_order": n % 2 == 0, "address": {"street": "1 Main St", "city": "Lyon", "zip": "69001"}}


def per_event_us(step: Callable[[int], object]) -> float:
    """The fastest of REPEATS runs of `step` over EVENTS events, in CPU µs per event."""
    runs = []
    for _ in range(REPEATS):
        start = time.process_time()
        for n in range(EVENTS):
            step(n)
        runs.append((time.process_time() - start) / EVENTS * 1e6)
    return min(runs)


def main() -> None:
    transforms = SourceTransforms.compile("events", SECTION, b"bench-hash-key")
    log_ids = [str(uuid.uuid4()) for _ in range(EVENTS)]
    events = [properties(n) for n in range(EVENTS)]
    agents = [USER_AGENTS[n % len(USER_AGENTS)] for n in range(EVENTS)]

    def nothing(n: int) -> object:
        return events[n], agents[n], log_ids[n]

    def all_four(n: int) -> object:
        # The judge's order: drop by name, bots, sampling, PII (the plan's check sits between them, not timed).
        if transforms.dropped_by_name(NAME):
            return None
        bot = transforms.bots != "off" and transforms.is_bot(agents[n])
        transforms.sampled_out(NAME, log_ids[n])
        return bot, transforms.scrub(events[n])

    steps: dict[str, Callable[[int], object]] = {
        "no rules (the loop alone)": nothing,
        "drop by name": lambda n: transforms.dropped_by_name(NAME),
        "bots (cached verdict)": lambda n: transforms.is_bot(agents[n]),
        "sampling (0.5: one blake2b)": lambda n: transforms.sampled_out(NAME, log_ids[n]),
        "sampling (an event without sample)": lambda n: transforms.sampled_out("page_view", log_ids[n]),
        "PII (hash + mask + drop nested)": lambda n: transforms.scrub(events[n]),
        "all four, in the judge's order": all_four,
    }
    figures = {label: per_event_us(step) for label, step in steps.items()}
    baseline = figures["no rules (the loop alone)"]
    print(f"{EVENTS} events × {REPEATS} runs (fastest), CPU µs per event; 'net' is less the loop alone")
    for label, micros in figures.items():
        net = "" if label.startswith("no rules") else f"   net {micros - baseline:6.2f}"
        print(f"  {label:38s} {micros:6.2f}{net}")

    fresh = [f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/{n}.0 Safari/537.36"
             for n in range(1_000)]
    start = time.process_time()
    for agent in fresh:
        transforms.is_bot(agent)
    print(f"  {'bots (a user agent never seen)':38s} {(time.process_time() - start) / len(fresh) * 1e6:6.2f}")


if __name__ == "__main__":
    main()
