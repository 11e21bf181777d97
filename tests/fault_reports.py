"""What each fault test proved, as a row of docs/guarantees.md: the fault, the ack mode and settings it ran
with, and sent / 2xx / indexed / lost / duplicated / time to drain.

Every argument that says what a row means is a required keyword, so a call site that forgets one fails at
once instead of publishing a row nobody can read. pytest writes the rows to `build/fault-reports.json` at the
end of every session (tests/conftest.py); `scripts/guarantees` renders them.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

# The fault classes the guarantees matrix has rows for: a closed set, so that two tests of the same fault
# land in the same row and a typo fails instead of making a row of its own.
FAULT_CLASSES = {
    "none": "no fault: a configuration checked end to end",
    "collector_killed": "kill -9 of the collector (in kafka mode: collectors, indexers and a broker)",
    "worker_killed": "kill -9 of one worker among live siblings",
    "graceful_stop": "SIGTERM, with the buffer full or bulk requests hung",
    "opensearch_down": "OpenSearch down or unreachable (JVM killed, stopped for minutes)",
    "opensearch_node_killed": "one node of a cluster killed or refusing connections",
    "opensearch_slow": "OpenSearch slow or the network to it hanging",
    "opensearch_429": "OpenSearch refusing items with 429",
    "opensearch_misconfigured": "TLS or credentials wrong, a proxy answering 401 or 413",
    "poison_events": "events OpenSearch rejects (mapping), requeued after the fix",
    "disk_full": "the volume of the store or journal full",
    "store_at_cap": "the pending store at PENDING_MAX_BYTES",
    "store_files_lost": "journal or store files removed under a running collector",
    "store_upkeep": "store schema migration or retention of many rows under load",
    "kafka_broker_killed": "a Kafka broker killed under load",
    "dead_letter_unwritable": "the dead-letter destination refusing writes",
    "config_reload": "RULES_FILE rewritten and reloaded (SIGHUP) under load",
    # No test pulls the power or destroys a volume: these rows stay "not tried" (docs/guarantees-scope.md).
    "power_loss": "power loss or a kernel crash (durable mode needs SQLITE_SYNCHRONOUS=FULL)",
    "volume_lost": "the collector's volume destroyed",
}
ACK_MODES = ("durable", "memory", "kafka")
REPORTS_PATH = Path(__file__).resolve().parent.parent / "build" / "fault-reports.json"

REPORTS: list[dict] = []
# How each test of a reporting module ended (passed, failed, skipped): a fault test that failed before its
# row was made must not read as "not tried" in the published table.
OUTCOMES: dict[str, str] = {}
REPORTING_CALLS = ("delivery_report(", "assert_delivered_exactly_once(", "assert_once(")
_reporting_modules: dict[str, bool] = {}


def is_reporting_module(path: str) -> bool:
    """Whether the test module at `path` publishes rows: a fault or integration test making them (found by its
    calls, so a new one needs no list; the unit tests of this module make rows only to check them)."""
    if path not in _reporting_modules:
        _reporting_modules[path] = Path(path).parent.name in ("faults", "integration") and any(
            call in Path(path).read_text() for call in REPORTING_CALLS)
    return _reporting_modules[path]


def record_outcome(nodeid: str, path: str, when: str, outcome: str) -> None:
    """pytest's report of one phase of a test: a failure in any phase counts, a pass only for the call."""
    if not is_reporting_module(path):
        return
    if outcome == "failed" or when == "call" or (outcome == "skipped" and nodeid not in OUTCOMES):
        OUTCOMES[nodeid] = outcome if OUTCOMES.get(nodeid) != "failed" else "failed"


def delivery_report(name: str, accepted: list[str] | set[str], counts: dict[str, int], *, sent: int,
                    fault: str, ack_mode: str, settings: dict[str, object], drain_seconds: float | None,
                    expected_loss: bool = False) -> dict:
    """Sent, answered 2xx, indexed, lost and duplicated, and what the row assumes; kept for the session's
    report. `counts` is how often each log_id was found; `expected_loss` marks a row whose loss is by design."""
    if fault not in FAULT_CLASSES:
        raise ValueError(f"fault {fault!r} is none of {sorted(FAULT_CLASSES)}")
    if ack_mode not in ACK_MODES:
        raise ValueError(f"ack_mode {ack_mode!r} is none of {ACK_MODES}")
    accepted = set(accepted)
    report = {
        "test": name, "fault": fault, "ack_mode": ack_mode,
        "settings": {key: str(value) for key, value in settings.items()},
        "sent": sent, "answered_2xx": len(accepted),
        "indexed": sum(1 for log_id in counts if log_id in accepted),
        "lost": len(accepted - set(counts)),
        "duplicated": sum(n - 1 for n in counts.values()),
        "drain_seconds": None if drain_seconds is None else round(drain_seconds, 2),
        "expected_loss": expected_loss,
    }
    REPORTS.append(report)
    return report


def current_commit(repository: Path) -> str:
    """The commit the tests ran from, with `-dirty` when the work tree had changes: a report of uncommitted
    code must not pass for the commit's."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repository, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--untracked-files=no", "--", "src", "tests") else "")


def write_reports(path: Path = REPORTS_PATH, commit: str | None = None) -> Path:
    """The session's rows as JSON, with the commit they describe (`commit`: read at the session's start, so that
    a commit made while the tests run is not credited with them) and the date. Rows of an earlier session of
    the same commit are kept unless this one ran the same test again, so a partial rerun completes a report."""
    rows, outcomes = list(REPORTS), dict(OUTCOMES)
    commit = commit or current_commit(path.parent.parent)
    if path.exists():
        earlier = json.loads(path.read_text())
        if earlier.get("commit") == commit:
            tests = {row["test"] for row in rows}
            rows = [row for row in earlier["reports"] if row["test"] not in tests] + rows
            outcomes = {**earlier.get("outcomes", {}), **outcomes}
    path.parent.mkdir(exist_ok=True)
    document = {"commit": commit, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "reports": rows, "outcomes": dict(sorted(outcomes.items()))}
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path
