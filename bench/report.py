"""The run's report: each figure's samples summarised as median, min and max, the targets checked against
them, and the table printed on stdout."""

from __future__ import annotations

import statistics
from typing import Any

from knobs import DELIVERY_RATE, DISK_RATE, MODES


def summarise(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    summary = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return summary


def median(figures: dict, figure: str, key: str) -> float:
    return figures[figure][key]["median"]


def targets(figures: dict) -> list[dict[str, Any]]:
    http = median(figures, "limit_http", "requests_per_second")
    storage = median(figures, "limit_opensearch", "events_per_second")
    checks = []
    if "single[seed]" in figures:
        seed = median(figures, "single[seed]", "accepted_per_second")
        seed_searchable = median(figures, "searchable[seed]", "searchable_per_second")
        for mode, goal in (("memory", 1.5), ("durable", 1.0)):
            checks.append({"target": f"single[{mode}] >= {goal}x single[seed]", "goal": goal,
                           "ratio": median(figures, f"single[{mode}]", "accepted_per_second") / seed})
            checks.append({"target": f"searchable[{mode}] >= 1.2x searchable[seed]", "goal": 1.2,
                           "ratio": median(figures, f"searchable[{mode}]", "searchable_per_second") / seed_searchable})
    for mode in MODES:
        single = median(figures, f"single[{mode}]", "accepted_per_second")
        checks += [
            {"target": f"single[{mode}] >= 75% of limit_http", "ratio": single / http, "goal": 0.75},
            {"target": f"batch[{mode}] >= 10x single", "goal": 10.0,
             "ratio": median(figures, f"batch[{mode}]", "events_per_second") / single},
            {"target": f"end_to_end[{mode}] >= 80% of limit_opensearch", "goal": 0.8,
             "ratio": median(figures, f"end_to_end[{mode}]", "events_per_second") / storage},
            {"target": f"rss_full_buffer[{mode}] <= 200 MB", "goal": 200.0,
             "ratio": median(figures, f"rss_full_buffer[{mode}]", "rss_mb"), "at_most": True},
            {"target": f"delivery[{mode}]@{DELIVERY_RATE:g} p99 <= 2,000 ms", "goal": 2000.0, "at_most": True,
             "ratio": median(figures, f"delivery[{mode}]@{DELIVERY_RATE:g}", "p99_ms")},
        ]
    checks.append({"target": f"delivery[durable]@{DISK_RATE:g} <= 2 KB written per event", "goal": 2048.0,
                   "at_most": True, "ratio": median(figures, f"delivery[durable]@{DISK_RATE:g}", "disk_bytes_per_event")})
    for check in checks:
        check["met"] = check["ratio"] <= check["goal"] if check.pop("at_most", False) else check["ratio"] >= check["goal"]
    return checks


def table(result: dict) -> str:
    lines = [f"{'figure':30} {'measure':22} {'median':>12} {'min':>12} {'max':>12}"]
    for figure, measures in result["figures"].items():
        for measure, value in measures.items():
            lines.append(f"{figure:30} {measure:22} {value['median']:>12,.1f} {value['min']:>12,.1f}"
                         f" {value['max']:>12,.1f}")
    lines.append("")
    for check in result["targets"]:
        lines.append(f"{'MET ' if check['met'] else 'MISS'} {check['target']:48} {check['ratio']:.2f}")
    return "\n".join(lines)
