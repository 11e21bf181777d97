"""Processes under measurement: a free port, waiting for one to listen, and `Server`, a collector (or the
limit app) in its own process group whose CPU time, memory and written bytes are read from /proc."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from knobs import SERVER_CPU


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def stolen_seconds(cpu: str = SERVER_CPU) -> float:
    """Seconds the hypervisor gave `cpu` to other guests (/proc/stat's steal): on a VM, a slower core shows
    here and nowhere else."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            return int(line.split()[8]) / os.sysconf("SC_CLK_TCK")
    return 0.0


class Server:
    """A collector (or the limit app) in its own process group, with its CPU time and memory readable."""

    def __init__(self, command: list[str], env: dict[str, str], port: int, workdir: Path,
                 pinned: bool = False) -> None:
        if pinned:
            command = ["taskset", "-c", SERVER_CPU, *command]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(workdir / f"server-{port}.log", "wb")
        self.process = subprocess.Popen(command, env=env, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for(self.url)

    def pids(self) -> list[int]:
        found = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.process.pid:
                        found.append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    pass
        return found

    def cpu_seconds(self) -> float:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
            except OSError:
                pass
        return total

    def waiting_seconds(self) -> float:
        """Seconds the server's threads were runnable but waited for a CPU (/proc/PID/task/TID/schedstat): on a
        pinned core, time another process took from it. A figure whose server and generator both waited was
        set by the machine's load, not by either of them."""
        total = 0.0
        for pid in self.pids():
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    total += int((task / "schedstat").read_text().split()[1]) / 1e9
            except (OSError, ValueError, IndexError):
                pass
        return total

    def memory_mb(self, field: str) -> float:
        """Sum over the server's processes of a /proc status field (VmRSS now, VmHWM peak)."""
        return self._proc_sum("status", rf"^{field}:\s+(\d+) kB") / 1024

    def written_bytes(self) -> int:
        """Bytes the server's processes caused to be written to storage (/proc/PID/io write_bytes)."""
        return self._proc_sum("io", r"^write_bytes: (\d+)")

    def _proc_sum(self, name: str, pattern: str) -> int:
        """Sum over the server's processes of the number `pattern` finds in /proc/PID/<name> (0 where absent)."""
        total = 0
        for pid in self.pids():
            try:
                match = re.search(pattern, Path(f"/proc/{pid}/{name}").read_text(), re.M)
                total += int(match.group(1)) if match else 0
            except OSError:
                pass
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
