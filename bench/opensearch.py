"""The OpenSearch node the bench delivers to: how many of an environment's documents are searchable, waiting
for them, deleting its indices, and keeping the dev node off the server's CPU during a pinned figure."""

from __future__ import annotations

import os
import subprocess
import time

from knobs import LOAD_CPU, OPENSEARCH, REPO


def searchable_now(environment: str) -> int:
    import httpx

    response = httpx.get(f"{OPENSEARCH}/events_{environment}_*/_count", params={"allow_no_indices": "true"})
    return response.json()["count"] if response.status_code == 200 else 0


def wait_until_searchable(environment: str, expected: int, timeout: float = 1800) -> float:
    """Poll the count without forcing a refresh: a document counts once OpenSearch made it searchable."""
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        response = httpx.get(f"{OPENSEARCH}/events_{environment}_*/_count", params={"allow_no_indices": "true"})
        if response.status_code == 200 and response.json()["count"] >= expected:
            return time.time()
        time.sleep(0.2)
    raise RuntimeError(f"only part of {expected} documents became searchable")


def delete_indices(environment: str) -> None:
    import httpx

    httpx.delete(f"{OPENSEARCH}/events_{environment}_*", timeout=120)
    httpx.delete(f"{OPENSEARCH}/_index_template/events_{environment}", timeout=120)


class opensearch_on_load_cpu:
    """Keep the dev OpenSearch node (when it is ours) off the server's CPU while a pinned figure runs."""

    def __enter__(self) -> None:
        found = subprocess.run([str(REPO / "scripts" / "opensearch-dev"), "pid"], capture_output=True, text=True,
                               env={**os.environ, "OPEN_SEARCH_DNS": OPENSEARCH})
        self.pid = found.stdout.strip() if found.returncode == 0 else ""
        if self.pid:
            subprocess.run(["taskset", "-a", "-cp", LOAD_CPU, self.pid], capture_output=True, check=True)

    def __exit__(self, *exc_info: object) -> None:
        if self.pid:
            subprocess.run(["taskset", "-a", "-cp", f"0-{(os.cpu_count() or 1) - 1}", self.pid],
                           capture_output=True, check=True)
