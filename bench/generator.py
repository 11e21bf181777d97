"""The load generator's own CPU, so that a figure it capped is never printed as the server's.

A figure is only the server's if the generator had CPU to spare: while it runs, each of its threads'
/proc/<pid>/task/<tid>/schedstat is read every 0.1 s (CPU time on core, and time runnable but waiting for a
core). The busiest thread's share of the wall clock is its load; on a pinned core, time spent waiting there
counts too (another process, such as OpenSearch, took the core the generator needed).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

# Above this share of its core the generator, not the server, may be what set the rate.
SATURATED = 0.9


def _thread_clocks(pid: int) -> dict[int, tuple[float, float]]:
    """Per thread of `pid`: (seconds on a CPU, seconds runnable but waiting for one)."""
    clocks = {}
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                on_cpu, waiting, _ = (Path(task) / "schedstat").read_text().split()
                clocks[int(task.name)] = (int(on_cpu) / 1e9, int(waiting) / 1e9)
            except (OSError, ValueError):
                pass
    except OSError:
        pass
    return clocks


def run_measured(command: list[str], env: dict[str, str], pinned: bool) -> tuple[str, dict[str, float]]:
    """Run the generator to its end; return its stdout and its headroom figures:
    generator_cpu (the busiest thread's share of a core), generator_waiting (its share spent waiting for the
    core) and generator_valid (0 when it was saturated: the figure is then the generator's, not the server's)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, dict[int, tuple[float, float]]]] = []

    def sample() -> None:
        while process.poll() is None:
            clocks = _thread_clocks(process.pid)
            if clocks:
                samples.append((time.monotonic(), clocks))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    sampler.join()
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, stdout, stderr)
    return stdout, headroom(samples, pinned)


def headroom(samples: list[tuple[float, dict[int, tuple[float, float]]]], pinned: bool) -> dict[str, float]:
    """The busiest thread's shares, each thread over its own window: from the first sample that saw it to the
    last (wrk's worker threads start after the main thread has built every request, and run to the end)."""
    first_seen: dict[int, tuple[float, tuple[float, float]]] = {}
    for at, clocks in samples:
        for tid, clock in clocks.items():
            first_seen.setdefault(tid, (at, clock))
    end, last = samples[-1] if samples else (0.0, {})
    shares = []
    for tid, (on_cpu, waiting) in last.items():
        start, (cpu_then, waiting_then) = first_seen[tid]
        if end - start >= 0.5:  # too short a window says nothing
            shares.append(((on_cpu - cpu_then) / (end - start), (waiting - waiting_then) / (end - start)))
    if not shares:
        return {"generator_cpu": 0.0, "generator_waiting": 0.0, "generator_valid": 0.0}
    cpu, waiting = max(shares)
    load = cpu + waiting if pinned else cpu
    return {"generator_cpu": cpu, "generator_waiting": waiting, "generator_valid": float(load <= SATURATED)}
