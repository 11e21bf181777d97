"""The run's report: each figure's samples summarised as median, min and max (samples the load generator
capped are left out, and a figure with none left is marked invalid), the targets of issue 22 checked against
them, the table printed on stdout and the same as markdown for RESULTS.md."""

from __future__ import annotations

import statistics
from typing import Any

from knobs import DELIVERY_RATE, MODES

# CPU seconds per 10,000 events of `single` before issue 22 (memory, durable): the target halves them.
CPU_PER_10K_BEFORE = {"memory": 1.0, "durable": 1.4}


def summarise(samples: list[dict[str, float]]) -> dict[str, Any]:
    valid = [sample for sample in samples if sample.get("generator_valid", 1.0) != 0.0]
    if not valid:
        worst = max(samples, key=lambda sample: sample["generator_cpu"] + sample["generator_waiting"])
        invalid = {"reason": "the load generator was saturated in every round",
                   "generator_cpu": worst["generator_cpu"], "generator_waiting": worst["generator_waiting"],
                   "rounds": len(samples)}
        if "cpu_us_per_request" in worst:
            # The server's own CPU over the requests it answered does not depend on how many were sent: it
            # stays a true figure when the rate is the generator's.
            invalid["cpu_us_per_request"] = statistics.median(sample["cpu_us_per_request"] for sample in samples)
        return {"invalid": invalid}
    summary: dict[str, Any] = {}
    for key in valid[0]:
        values = [sample[key] for sample in valid]
        summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    if len(valid) < len(samples):
        summary["rounds_left_out"] = {"median": len(samples) - len(valid), "min": 0, "max": 0}
    return summary


def median(figures: dict, figure: str, key: str) -> float | None:
    """The figure's median, or None when it was not measured or the generator capped it."""
    measures = figures.get(figure, {})
    return measures[key]["median"] if key in measures else None


def targets(figures: dict) -> list[dict[str, Any]]:
    """Issue 22's targets, and issue 21's; `met` is None where a figure they need is missing or invalid."""
    checks: list[dict[str, Any]] = []

    def check(target: str, goal: float, numerator: float | None, denominator: float | None = 1.0,
              at_most: bool = False, cpu_ratio: float | None = None) -> None:
        ratio = numerator / denominator if numerator is not None and denominator else None
        met = None if ratio is None else (ratio <= goal if at_most else ratio >= goal)
        checks.append({"target": target, "goal": goal, "ratio": ratio, "met": met, "cpu_ratio": cpu_ratio,
                       "why_not": _why_not(figures, target) if ratio is None else ""})

    def us_per_request(figure: str) -> float | None:
        if figure.startswith("limit_http"):
            return median(figures, figure, "cpu_us_per_request")
        per_10k = median(figures, figure, "cpu_seconds_per_10k")
        return None if per_10k is None else per_10k * 100

    def cpu_ratio(figure: str, against: str) -> float | None:
        """The rate ratio each server would reach with a core of its own: the other's CPU per request over its."""
        mine, theirs = us_per_request(figure), us_per_request(against)
        return theirs / mine if mine and theirs else None

    uvicorn = median(figures, "limit_http[uvicorn]", "requests_per_second")
    seed = median(figures, "single[seed]", "accepted_per_second")
    seed_searchable = median(figures, "searchable[seed]", "searchable_per_second")
    for mode in MODES:
        single = median(figures, f"single[{mode}]", "accepted_per_second")
        if mode == "memory":
            check("single[memory] >= 0.75x limit_http[uvicorn]", 0.75, single, uvicorn,
                  cpu_ratio=cpu_ratio("single[memory]", "limit_http[uvicorn]"))
        check(f"single[{mode}] >= {1.5 if mode == 'memory' else 1.2}x single[seed]",
              1.5 if mode == "memory" else 1.2, single, seed, cpu_ratio=cpu_ratio(f"single[{mode}]", "single[seed]"))
        check(f"searchable[{mode}] >= 1.2x searchable[seed]", 1.2,
              median(figures, f"searchable[{mode}]", "searchable_per_second"), seed_searchable)
        check(f"batch[{mode}] >= 10x single[{mode}], events/s", 10.0,
              median(figures, f"batch[{mode}]", "events_per_second"), single)
        half = CPU_PER_10K_BEFORE[mode] / 2
        check(f"single[{mode}] CPU s per 10k events <= {half:g} (half of {CPU_PER_10K_BEFORE[mode]:g})", half,
              median(figures, f"single[{mode}]", "cpu_seconds_per_10k"), at_most=True)
        check(f"delivery[{mode}]@{DELIVERY_RATE:g} p99 <= 2,000 ms (earlier target)", 2000.0,
              median(figures, f"delivery[{mode}]@{DELIVERY_RATE:g}", "p99_ms"), at_most=True)
    # Issue 21's: what a tracking plan of 50 events with every transform on adds to an event's CPU.
    check("rules: 50-event plan, every transform, CPU µs per event added <= 20", 20.0,
          median(figures, "rules", "extra_us"), at_most=True)
    return checks


def _why_not(figures: dict, target: str) -> str:
    """`not measured` when a figure the target names is absent from the run, else `invalid` (capped by wrk)."""
    named = [word for word in target.split() if "[" in word]
    return "invalid" if named and all(name.split(",")[0] in figures for name in named) else "not measured"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def _verdict(check: dict[str, Any]) -> str:
    return check["why_not"].upper() if check["met"] is None else "MET" if check["met"] else "MISSED"


def table(result: dict) -> str:
    lines = [f"{'figure':30} {'measure':22} {'median':>12} {'min':>12} {'max':>12}"]
    for figure, measures in result["figures"].items():
        if "invalid" in measures:
            bad = measures["invalid"]
            cpu = f"; CPU per request {bad['cpu_us_per_request']:.2f} µs" if "cpu_us_per_request" in bad else ""
            lines.append(f"{figure:30} INVALID: {bad['reason']}{cpu}")
            continue
        for measure, value in measures.items():
            lines.append(f"{figure:30} {measure:22} {value['median']:>12,.2f} {value['min']:>12,.2f}"
                         f" {value['max']:>12,.2f}")
    lines.append("")
    for check in result["targets"]:
        ratio = "-" if check["ratio"] is None else f"{check['ratio']:.2f}"
        lines.append(f"{_verdict(check):13} {check['target']:62} {ratio}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    """The generated part of RESULTS.md: every figure with the generator's headroom, then the targets."""
    lines = [f"Run {result['date']}: {result['machine']['cpus']} CPUs, Python {result['machine']['python']}, "
             f"{result['settings']['repeats']} rounds of {result['settings']['seconds']} s. Median (min–max) "
             "of the rounds the load generator did not cap. `generator` is wrk's busiest thread: its share of a "
             "core on CPU / waiting for it (a figure is invalid above 90% together, on a pinned core).", "",
             "| figure | median (min–max) of each measure | generator |", "|---|---|---|"]
    for figure, measures in result["figures"].items():
        if "invalid" in measures:
            bad = measures["invalid"]
            cpu = (f"; the server's CPU per request, which does not depend on the generator: "
                   f"{bad['cpu_us_per_request']:.2f} µs" if "cpu_us_per_request" in bad else "")
            lines.append(f"| `{figure}` | **rate invalid**: {bad['reason']}{cpu} | "
                         f"{bad['generator_cpu']:.0%} / {bad['generator_waiting']:.0%} |")
            continue
        generator = (f"{measures['generator_cpu']['median']:.0%} / {measures['generator_waiting']['median']:.0%}"
                     if "generator_cpu" in measures else "")
        shown = []
        for measure, value in measures.items():
            same_as_accepted = measure == "requests_per_second" and value == measures.get("accepted_per_second")
            if measure.startswith("generator_") or same_as_accepted or (measure == "errors" and not value["max"]):
                continue
            spread = "" if value["min"] == value["max"] else f" ({_number(value['min'])}–{_number(value['max'])})"
            shown.append(f"{measure} {_number(value['median'])}{spread}")
        lines.append(f"| `{figure}` | {'; '.join(shown)} | {generator} |")
    lines += ["", "| target | ratio | result | the ratio in CPU per request (each on a core of its own) |",
              "|---|---|---|---|"]
    for check in result["targets"]:
        ratio = "–" if check["ratio"] is None else f"{check['ratio']:.2f}"
        cpu = "" if check.get("cpu_ratio") is None else f"{check['cpu_ratio']:.2f}"
        lines.append(f"| {check['target']} | {ratio} | {_verdict(check)} | {cpu} |")
    return "\n".join(lines) + "\n"
