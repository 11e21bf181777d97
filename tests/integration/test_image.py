"""The container image, built from the Dockerfile by scripts/image and run by podman against the dev node:
non-root, read-only root file system, the store on its volume, probes, JSON logs, a clean stop."""

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

from support import OPENSEARCH_URL, REPO, TEST_SECRET, assert_delivered_exactly_once, event, free_port, wait_until

pytestmark = pytest.mark.skipif(not (shutil.which("podman") and shutil.which("buildah")),
                                reason="needs podman and buildah (scripts/test installs them)")

IMAGE = "localhost/event-collector:test"
# This machine's VM gives root no CAP_SYS_RESOURCE (no raising an rlimit) and mixes cgroup v1 and v2, which
# crun refuses: runc, with limits no higher than the current ones (docs/deploy.md).
RUN_HERE = ["--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def image() -> str:
    # No registry is reachable here: the base is made from Debian's packages (LOCAL_BASE=1), once.
    env = {**os.environ, "IMAGE": IMAGE, "LOCAL_BASE": os.environ.get("LOCAL_BASE", "1")}
    result = subprocess.run([str(REPO / "scripts" / "image")], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    return IMAGE


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


def test_the_image_runs_as_non_root_keeps_its_store_on_the_volume_and_delivers_once(image, opensearch):
    name, volume, port = f"collector-{uuid.uuid4().hex[:8]}", f"store-{uuid.uuid4().hex[:8]}", free_port()
    environment = "t" + uuid.uuid4().hex[:12]
    settings = {"JWT_SECRET": TEST_SECRET, "SERVER_PORT": str(port), "SERVER_WORKERS": "2",
                "SERVER_ENVIRONMENT": environment, "OPEN_SEARCH_DNS": OPENSEARCH_URL,
                "FLUSH_INTERVAL_SECONDS": "0.2", "SHUTDOWN_GRACE_SECONDS": "10"}
    started = podman("run", "-d", "--name", name, *RUN_HERE, "--network", "host", "--read-only", "--tmpfs", "/tmp",
                     "-v", f"{volume}:/data", *(f"--env={key}={value}" for key, value in settings.items()), image)
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=60, message=f"the container ready\n{podman('logs', name).stderr}")
        uid = podman("exec", name, "/opt/collector/bin/python", "-c", "import os; print(os.getuid())")
        assert uid.stdout.strip() == "10001"
        # compose.yaml's healthcheck, which needs no shell, passes against this port.
        healthcheck = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["collector"]["healthcheck"]
        assert healthcheck["test"][0] == "CMD"
        command = [part.replace(":3000/", f":{port}/") for part in healthcheck["test"][1:]]
        assert podman("exec", name, *command).returncode == 0
        token = jwt.encode({"sub": "u", "exp": int(time.time()) + 600}, TEST_SECRET, algorithm="HS256")
        events = [event() for _ in range(100)]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
            assert {http.post("/events", json=e).status_code for e in events} == {200}
        assert_delivered_exactly_once("container image (podman, 2 workers)", [e["log_id"] for e in events],
                                      opensearch, environment, fault="none", ack_mode="durable",
                                      settings={"SERVER_WORKERS": "2", "image": "podman, read-only root"})

        stopped = podman("stop", "-t", "20", name, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        assert podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        logs = podman("logs", name)
        lines = (logs.stdout + logs.stderr).splitlines()
        assert lines and all(json.loads(line)["message"] for line in lines)  # JSON, the default off a terminal
        mountpoint = Path(podman("volume", "inspect", "-f", "{{.Mountpoint}}", volume).stdout.strip())
        assert (mountpoint / "pending.db").stat().st_uid == 10001
    finally:
        podman("rm", "-f", name)
        podman("volume", "rm", "-f", volume)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
