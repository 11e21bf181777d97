"""The benchmark's figures against their limits, as one PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def draw(result: dict, path: Path) -> None:
    figures = result["figures"]

    def present(*bars_of: tuple[str, str, str | None]) -> list[tuple[str, float, float, float]]:
        """Bars of the figures this run has (the seed's need SEED_BIN; kafka's, the Kafka jars), valid ones only
        (a figure the load generator capped has no value)."""
        return [(label or name, figures[name][measure]["median"], figures[name][measure]["min"],
                 figures[name][measure]["max"]) for name, measure, label in bars_of if measure in figures.get(name, {})]

    modes = ("memory", "durable", "kafka")
    panels = [
        ("HTTP requests/s (one worker) vs the server's ceilings",
         present(*[(f"limit_http[{k}]", "requests_per_second", None) for k in ("raw", "uvicorn")],
                 *[(f"single[{m}]", "accepted_per_second", None) for m in ("memory", "durable")],
                 *[(f"single_all_cores[{m}]", "accepted_per_second", None) for m in ("memory", "durable")])),
        ("CPU µs per request, one pinned worker",
         present(*[(f"limit_http[{k}]", "cpu_us_per_request", None) for k in ("raw", "uvicorn")])
         + [(f"single[{m}]", figures[f"single[{m}]"]["cpu_seconds_per_10k"]["median"] * 100,
             figures[f"single[{m}]"]["cpu_seconds_per_10k"]["min"] * 100,
             figures[f"single[{m}]"]["cpu_seconds_per_10k"]["max"] * 100)
            for m in ("seed", "memory", "durable") if "cpu_seconds_per_10k" in figures.get(f"single[{m}]", {})]),
        ("events/s into OpenSearch vs the storage ceiling",
         present(("limit_opensearch", "events_per_second", None),
                 *[(f"end_to_end[{m}]", "events_per_second", None) for m in ("memory", "durable")])),
        ("accepted events/s: batch of 100 vs single",
         present(*[(f"batch[{m}]", "events_per_second", None) for m in ("memory", "durable")],
                 *[(f"single[{m}]", "accepted_per_second", None) for m in ("memory", "durable")])),
        ("RSS (MB) holding a full 100,000-event buffer (target 200)",
         present(*[(f"rss_full_buffer[{m}]", "rss_mb", None) for m in ("memory", "durable")])),
        ("against the original (seed): events/s on one pinned worker, and searchable/s on the whole machine",
         present(*[(f"single[{m}]", "accepted_per_second", None) for m in ("seed", *modes)],
                 *[(f"searchable[{m}]", "searchable_per_second", None) for m in ("seed", "memory", "durable")])),
        ("delivery, 2xx to searchable, at a fixed rate: p99 in ms (target 2,000 at 2,000/s)",
         present(*[(f"delivery[{m}]@{rate}", "p99_ms", None) for rate in (2000, 350) for m in ("memory", "durable")])),
        ("bytes written to disk per accepted event, durable mode (target 2,048 at 350/s)",
         present(*[("delivery[durable]@" + rate, "disk_bytes_per_event", None) for rate in ("350", "2000")])),
    ]
    panels = [(title, bars) for title, bars in panels if bars]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for axis, (title, bars) in zip(axes[:, 0], panels):
        names = [b[0] for b in bars]
        medians = [b[1] for b in bars]
        errors = [[b[1] - b[2] for b in bars], [b[3] - b[1] for b in bars]]
        colours = ["#888888" if name.startswith("limit") or "[seed]" in name else "#2a6fdb" for name in names]
        axis.barh(names, medians, xerr=errors, color=colours, capsize=4)
        axis.set_title(title, fontsize=10)
        axis.invert_yaxis()
        for y, value in enumerate(medians):
            axis.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    fig.suptitle(f"event-collector bench, {result['machine']['cpus']} CPUs, {result['date']}"
                 " (median, whiskers min-max)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the title above the panels
    fig.savefig(path, dpi=100)
    plt.close(fig)
