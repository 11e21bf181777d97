"""The real Segment-compatible SDKs against a real collector and OpenSearch, through faults (docs/sdks.md).

Each SDK sends 1,000 messages of mixed types (track, identify, page, screen, group, alias), paced over
~15 s, through its own queue and retries, while the collector (ACK_MODE durable) is killed with SIGKILL and
started again on the same port, and while the OpenSearch node it writes to is stopped for 30 s. Then every
message the SDK made is in OpenSearch exactly once, or the SDK itself reported giving it up.

- @segment/analytics-next: its npm package's UMD build in headless Chromium, on a page of another origin
  that the source allows, settings inline (tests/sdks/analytics-next.html);
- @segment/analytics-node: tests/sdks/node-driver.js;
- segment-analytics-python and rudder-sdk-python: tests/sdks/python-driver.py.

The drivers report what the SDK said (JSON lines): each message made ("created"), each delivered by the
SDK's own measure of success ("ok": the callback, or the HTTP call it returned from), each given up
("gave_up": on_error, delivery_failure). The npm packages are pinned in tests/sdks/package-lock.json and
installed by scripts/test (npm ci); the Python SDKs are in pyproject's test extra.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from support import REPO, Site, delivery_report, wait_until

pytestmark = pytest.mark.slow

SDKS = REPO / "tests" / "sdks"
KEY = "wk_sdk_" + "s" * 24
MESSAGES = 1000
SEND_SECONDS = 15
OUTAGE_SECONDS = 30  # the issue's: OpenSearch stopped this long while the SDK sends
CHROMIUM, CHROMEDRIVER, NODE = shutil.which("chromium"), shutil.which("chromedriver"), shutil.which("node")


class Facts:
    """What an SDK driver reported so far."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.ok: set[str] = set()
        self.gave_up: dict[str, str] = {}
        self.refused: list[dict] = []  # a message the SDK would not even queue (a full queue)
        self.retries = 0  # requests that failed or were sent again: the faults reached the SDK
        self.other: list[dict] = []  # errors: shown when the test fails
        self.done = False
        self.sent_all = False

    def add(self, fact: dict) -> None:
        if "created" in fact:
            self.created.append(fact["created"])
        elif "ok" in fact:
            self.ok.update(fact["ok"])
        elif "gave_up" in fact:
            self.gave_up.update(dict.fromkeys(fact["gave_up"], fact["reason"]))
        elif "retry" in fact or "failed_attempt" in fact:
            self.retries += 1
        elif "queue_full" in fact:
            self.refused.append(fact)
        elif fact.get("done") or fact.get("sent_all"):
            self.done = fact.get("done", False) or self.done
            self.sent_all = True
        else:
            self.other.append(fact)

    def summary(self) -> str:
        unsettled = [i for i in self.created if i not in self.ok and i not in self.gave_up]
        return (f"{len(self.created)} created, {len(self.ok)} ok, {len(self.gave_up)} given up, {self.retries} "
                f"retries, unsettled {len(unsettled)} e.g. {unsettled[:3]}, other {self.other[-5:]}")

    def settled(self) -> bool:
        """Every message made is delivered or given up, by the SDK's own account."""
        return len(self.created) >= MESSAGES - len(self.refused) and set(self.created) <= self.ok | set(self.gave_up)


class ProcessDriver:
    """A driver script in a process of its own, its stdout's JSON lines read as they come."""

    def __init__(self, command: list[str], cwd: Path, log: Path) -> None:
        self.facts = Facts()
        self.log = log
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.facts.add(json.loads(line))

    def poll(self) -> Facts:
        if self.process.poll() is not None and self.process.returncode != 0:
            self.reader.join(5)
            raise AssertionError(f"driver exited with {self.process.returncode}: {self.facts.other}\n"
                                 f"{self.log.read_text(errors='replace')[-3000:]}")
        return self.facts

    def finished(self) -> bool:
        """The driver flushed the SDK and exited."""
        facts = self.poll()
        if self.process.poll() is None:
            return False
        self.reader.join(5)
        return facts.done

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


class BrowserDriver:
    """analytics-next in headless Chromium: the page sends; the test reads its facts through selenium."""

    def __init__(self, site: Site) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        # --no-sandbox: tests run as root, where Chromium's sandbox refuses to start.
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-extensions"):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(30)
        self.facts = Facts()
        self.driver.get(site.origin + "/analytics-next.html")

    def poll(self) -> Facts:
        for fact in self.driver.execute_script("return window.sdk.take()"):
            self.facts.add(fact)
        errors = [fact for fact in self.facts.other if "error" in fact]
        assert not errors, errors
        return self.facts

    def finished(self) -> bool:
        return self.poll().settled()

    def close(self) -> None:
        self.driver.quit()


def sources_file(tmp_path: Path, origins: list[str]) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(json.dumps({"sources": [{"name": "sdk", "write_keys": [KEY], "allowed_origins": origins}]}))
    return path


def through_faults(name: str, collector, node, driver) -> None:
    """While `driver`'s SDK sends: kill -9 the collector early and start it again on its port, then stop the
    OpenSearch node for OUTAGE_SECONDS. Then check that every message the SDK made is indexed exactly once
    or was given up by the SDK, and print the counts into the faults table."""
    environment = f"sdk_{collector.environment}"  # the indices of source "sdk": events_sdk_{environment}_*
    started, times = time.monotonic(), {}
    wait_until(lambda: len(driver.poll().created) >= MESSAGES // 10, timeout=60, message="the SDK sending")
    retries = driver.poll().retries
    collector.process.send_signal(signal.SIGKILL)
    collector.process.wait(30)
    # Down until the SDK meets it down (an SDK that sends a batch every few seconds could miss a short gap).
    wait_until(lambda: driver.poll().retries > retries, timeout=60, message="the SDK to meet the collector down")
    collector.start()  # the same port: the SDK's retries reach it
    times["restarted"] = time.monotonic() - started
    wait_until(lambda: len(driver.poll().created) >= MESSAGES // 4, timeout=60, message="sending after the restart")
    node.stop()
    try:
        times["opensearch stopped"] = time.monotonic() - started
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:  # the outage the issue asks for; the SDK's facts read meanwhile
            driver.poll()
            time.sleep(1)
    finally:
        node.start()  # also when the test failed meanwhile: the module's next test needs the node
    times["opensearch back"] = time.monotonic() - started
    try:
        wait_until(driver.finished, timeout=180, interval=0.5, message="the SDK to deliver or give up every message")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {driver.poll().summary()}") from None
    facts = driver.poll()
    times["sdk settled"] = time.monotonic() - started
    expected = set(facts.created) - set(facts.gave_up)
    wait_until(lambda: node.client.count(environment) >= len(expected), timeout=180,
               message=f"{len(expected)} messages indexed")
    counts = node.client.log_id_counts(environment)
    times["indexed"] = time.monotonic() - started
    created = set(facts.created)
    # The published row (docs/guarantees.md): lost is what the SDK had answered 2xx and is not indexed.
    report = delivery_report(name, facts.ok & created, counts, sent=len(created), fault="collector_killed",
                             ack_mode="durable", settings={**collector.report_settings(), "client": "the SDK's own queue"
                                                           " and retries", "OpenSearch": "stopped 30 s"},
                             drain_seconds=None)
    print(report, f"given up by the SDK: {len(facts.gave_up)}, not queued: {len(facts.refused)}, failed or resent "
          f"requests: {facts.retries};", ", ".join(f"{step} at {at:.1f} s" for step, at in times.items()))
    assert facts.retries > 0, "the SDK never had to retry: the kill did not reach it"
    assert len(facts.created) + len(facts.refused) == MESSAGES, report
    assert len(created) == len(facts.created), "the SDK made a messageId twice"
    assert report["duplicated"] == 0, report
    assert set(counts) <= created, "documents of messages the SDK did not make"
    unaccounted = created - set(counts) - set(facts.gave_up)
    assert not unaccounted, (report, sorted(unaccounted)[:5], facts.other[:5])
    # Every 2xx the SDK saw is there; with generous retries, nothing was given up in a kill of seconds.
    assert facts.ok & created <= set(counts), report
    assert not facts.gave_up and not facts.refused, (report, list(facts.gave_up.items())[:5], facts.refused[:5])


@pytest.fixture
def sdk_collector(collector_factory, own_opensearch, tmp_path):
    """A collector of source "sdk" (its key KEY) writing to the module's own OpenSearch node (conftest's
    own_opensearch: one node for the four tests, each stops it once)."""
    def start(origins: list[str] | None = None):
        settings = {}
        if origins:
            settings["CORS_ALLOWED_ORIGINS"] = ",".join(origins)
        return collector_factory(SOURCES_FILE=str(sources_file(tmp_path, origins or [])), JWT_SECRET="",
                                 ACK_MODE="durable", OPEN_SEARCH_DNS=own_opensearch.url, OPEN_SEARCH_TIMEOUT_SECONDS=5,
                                 **settings)

    return start


@pytest.mark.parametrize("sdk", ["segment", "rudder"])
def test_python_sdk_delivers_each_message_exactly_once_through_kill_9_and_an_opensearch_outage(
        sdk, sdk_collector, own_opensearch, tmp_path):
    collector = sdk_collector()
    driver = ProcessDriver([sys.executable, str(SDKS / "python-driver.py"), sdk, collector.url, KEY, str(MESSAGES),
                            str(SEND_SECONDS)], SDKS, tmp_path / "driver.log")
    try:
        through_faults({"segment": "segment-analytics-python 2.4.0", "rudder": "rudder-sdk-python 2.1.9"}[sdk]
                       + ": kill -9, OpenSearch 30 s", collector, own_opensearch, driver)
    finally:
        driver.close()


def test_analytics_node_delivers_each_message_exactly_once_through_kill_9_and_an_opensearch_outage(
        sdk_collector, own_opensearch, tmp_path):
    assert NODE and (SDKS / "node_modules/@segment/analytics-node").is_dir(), \
        "needs node and tests/sdks/node_modules (make test runs npm ci there)"
    collector = sdk_collector()
    driver = ProcessDriver([NODE, str(SDKS / "node-driver.js"), collector.url, KEY, str(MESSAGES),
                            str(SEND_SECONDS)], SDKS, tmp_path / "driver.log")
    try:
        through_faults("analytics-node 3.1.0: kill -9, OpenSearch 30 s", collector, own_opensearch, driver)
    finally:
        driver.close()


def test_analytics_next_in_chromium_delivers_each_message_exactly_once_through_kill_9_and_an_opensearch_outage(
        sdk_collector, own_opensearch):
    # Failed, not skipped: a browser test that silently does not run proves nothing.
    assert CHROMIUM and CHROMEDRIVER, "needs Debian's chromium and chromium-driver (make test installs them)"
    assert (SDKS / "node_modules/@segment/analytics-next/dist/umd/index.js").is_file(), \
        "needs tests/sdks/node_modules (make test runs npm ci there)"
    site = Site()
    site.files["/ajs/index.js"] = ((SDKS / "node_modules/@segment/analytics-next/dist/umd/index.js").read_bytes(),
                                   "text/javascript")
    collector = sdk_collector([site.origin])  # the source allows the page's origin, and so does CORS
    config = json.dumps({"apiHost": f"127.0.0.1:{collector.port}/v1", "writeKey": KEY, "count": MESSAGES,
                         "seconds": SEND_SECONDS})
    page = (SDKS / "analytics-next.html").read_bytes().replace(b"/*CONFIG*/null", config.encode())
    site.files["/analytics-next.html"] = (page, "text/html")
    driver = None
    try:
        driver = BrowserDriver(site)
        through_faults("analytics-next 1.84.3 Chromium: kill -9, OpenSearch 30 s", collector, own_opensearch, driver)
    finally:
        if driver is not None:
            driver.close()
        site.close()
