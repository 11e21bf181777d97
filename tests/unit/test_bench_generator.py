"""The bench's guard against measuring its own load generator (bench/generator.py, issue 22): a figure whose
generator had no idle CPU left is flagged, and the report leaves it out instead of printing it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from generator import headroom, run_measured  # noqa: E402
from report import summarise  # noqa: E402


def samples(cpu: float, waiting: float, seconds: float = 10.0) -> list:
    """Two /proc samples of a one-thread generator that spent `cpu` and `waiting` of each second."""
    return [(0.0, {7: (0.0, 0.0)}), (seconds, {7: (cpu * seconds, waiting * seconds)})]


def test_a_generator_with_idle_cpu_gives_a_valid_figure() -> None:
    assert headroom(samples(0.3, 0.1), pinned=True) == {
        "generator_cpu": 0.3, "generator_waiting": 0.1, "generator_valid": 1.0}


def test_a_busy_generator_or_one_starved_of_its_pinned_core_is_invalid() -> None:
    assert headroom(samples(0.95, 0.0), pinned=True)["generator_valid"] == 0.0
    # On its pinned core, time waiting for it is time another process took: the generator was the limit.
    assert headroom(samples(0.5, 0.45), pinned=True)["generator_valid"] == 0.0
    # Unpinned (whole-machine figures), waiting for a core is the server sharing it: only its own CPU counts.
    assert headroom(samples(0.5, 0.45), pinned=False)["generator_valid"] == 1.0


def test_the_busiest_thread_decides_each_over_its_own_window() -> None:
    # Thread 1 (wrk's main thread) built the requests, then slept; thread 2 was started after the first sample.
    run = [(0.0, {1: (0.0, 0.0)}), (2.0, {1: (2.0, 0.0), 2: (0.0, 0.0)}), (12.0, {1: (2.0, 0.0), 2: (9.5, 0.0)})]
    assert headroom(run, pinned=False)["generator_cpu"] == 0.95


def test_invalid_rounds_are_left_out_and_a_figure_with_none_left_is_invalid() -> None:
    good = {"accepted_per_second": 100.0, "generator_cpu": 0.2, "generator_waiting": 0.0, "generator_valid": 1.0}
    capped = {"accepted_per_second": 900.0, "generator_cpu": 0.97, "generator_waiting": 0.0, "generator_valid": 0.0}
    assert summarise([good, capped])["accepted_per_second"]["median"] == 100.0
    assert "accepted_per_second" not in summarise([capped]) and "invalid" in summarise([capped])


def test_a_real_process_is_measured_from_proc() -> None:
    spin = [sys.executable, "-c", "import time\nend = time.time() + 1.0\nwhile time.time() < end: pass\nprint('done')"]
    output, measured = run_measured(spin, {}, pinned=True)
    assert output.strip() == "done"
    # Read from its schedstat: some time on a CPU, and never more time on it or waiting than there was.
    # (How much of each depends on how busy the machine is; the verdict on them is tested above.)
    assert 0 < measured["generator_cpu"] and measured["generator_cpu"] + measured["generator_waiting"] < 1.1


def test_a_failing_generator_raises() -> None:
    try:
        run_measured([sys.executable, "-c", "raise SystemExit(3)"], {}, pinned=False)
    except subprocess.CalledProcessError as error:
        assert error.returncode == 3
    else:
        raise AssertionError("a failed generator run must not give a figure")


def test_an_invalid_rate_keeps_the_servers_own_cpu_per_request() -> None:
    capped = [{"requests_per_second": 95_000.0 + n, "cpu_us_per_request": cpu, "generator_cpu": 0.93,
               "generator_waiting": 0.03, "generator_valid": 0.0} for n, cpu in enumerate((7.7, 7.9, 8.4))]
    invalid = summarise(capped)["invalid"]
    assert invalid["cpu_us_per_request"] == 7.9 and invalid["rounds"] == 3
    # A figure that does not measure it (the `single` ones count CPU per 10k events) gets none.
    single = {"accepted_per_second": 1.0, "generator_cpu": 0.95, "generator_waiting": 0.0, "generator_valid": 0.0}
    assert "cpu_us_per_request" not in summarise([single])["invalid"]
