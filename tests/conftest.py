from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import OPENSEARCH_URL, CollectorProcess, KafkaCluster, OpenSearch  # noqa: E402


@pytest.fixture(scope="session")
def opensearch() -> OpenSearch:
    try:
        httpx.get(OPENSEARCH_URL, timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.fail(f"the test OpenSearch at {OPENSEARCH_URL} does not answer ({exc}); "
                    "start it with scripts/opensearch-dev start (make test does)")
    return OpenSearch()


@pytest.fixture
def collector_factory(tmp_path: Path, opensearch: OpenSearch):
    """Start collectors with settings of the test's choosing; all are stopped afterwards."""
    started: list[CollectorProcess] = []

    def start(**settings) -> CollectorProcess:
        collector = CollectorProcess(tmp_path, **settings).start()
        started.append(collector)
        return collector

    yield start
    for collector in started:
        if collector.process is not None and collector.process.poll() is None:
            collector.stop()


@pytest.fixture
def collector(collector_factory) -> CollectorProcess:
    return collector_factory()


@pytest.fixture(scope="module")
def own_opensearch(tmp_path_factory):
    """A node of the test module's own, which its tests may stop and kill without disturbing others."""
    from support import DevNode

    node = DevNode(tmp_path_factory.mktemp("opensearch")).start()
    yield node
    node.stop()


def pytest_sessionstart(session):
    from fault_reports import current_commit

    session.config.stash[_COMMIT] = current_commit(Path(__file__).parent.parent)


_COMMIT = pytest.StashKey[str]()


def pytest_runtest_logreport(report):
    from fault_reports import record_outcome

    record_outcome(report.nodeid, str(Path(__file__).parent.parent / report.location[0]), report.when, report.outcome)


def pytest_terminal_summary(terminalreporter, config):
    from fault_reports import OUTCOMES, REPORTS, write_reports

    if REPORTS or OUTCOMES:
        terminalreporter.section("delivery under faults")
        terminalreporter.write_line(f"{'test':58} {'mode':>7} {'sent':>7} {'2xx':>7} {'indexed':>7} {'lost':>5} "
                                    f"{'dup':>5} {'drain s':>8}")
        for r in REPORTS:
            drain = "-" if r["drain_seconds"] is None else f"{r['drain_seconds']:.1f}"
            terminalreporter.write_line(f"{r['test']:58} {r['ack_mode']:>7} {r['sent']:>7} {r['answered_2xx']:>7} "
                                        f"{r['indexed']:>7} {r['lost']:>5} {r['duplicated']:>5} {drain:>8}")
        # Kept for scripts/guarantees, which renders docs/guarantees.md from it.
        terminalreporter.write_line(f"written to {write_reports(commit=config.stash.get(_COMMIT, None))}")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory) -> KafkaCluster:
    """A three-broker Kafka of the test module's own (modules kill brokers; one start per module keeps CI
    affordable). A module that wants another shape defines its own `kafka` fixture."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
