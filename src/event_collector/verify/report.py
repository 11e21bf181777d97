"""What a run saw, as figures: the readable table, the JSON object and the exit status."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from .arguments import Plan
from .asking import PollResult
from .sender import Ledger

EXIT_PASSED, EXIT_LOST_OR_DUPLICATED, EXIT_CANNOT_CHECK = 0, 1, 2
# Ids listed in the report for the operator to look up; the counts are always complete.
IDS_SHOWN = 20


@dataclass
class Observations:
    """What the checks saw over the run, kept by run.py."""

    check: str                                                 # what was asked, for the reader
    sees_duplicates: bool
    first_found: dict[str, float] = field(default_factory=dict)   # id -> clock time of the first poll finding it
    documents: dict[str, int] = field(default_factory=dict)       # id -> most documents any poll counted
    states: dict[str, dict] = field(default_factory=dict)         # receipts: id -> last receipt, not indexed
    unsearchable: set[str] = field(default_factory=set)
    polls: int = 0
    failed_polls: int = 0
    last_poll_error: str | None = None
    last_poll_failed: bool = False
    interrupted: bool = False
    ended_at: float = 0.0

    def take(self, result: PollResult, now: float) -> None:
        """Add what one poll found at clock time `now`."""
        self.polls += 1
        self.last_poll_failed = result.error is not None
        if result.error is not None:
            self.failed_polls += 1
            self.last_poll_error = result.error
        for log_id, documents in result.documents.items():
            self.first_found.setdefault(log_id, now)
            self.documents[log_id] = max(self.documents.get(log_id, 0), documents)
            self.states.pop(log_id, None)
        self.states.update(result.states)
        self.unsearchable |= result.unsearchable


@dataclass
class Figures:
    run_id: str
    url: str
    checked_by: str
    sent: int
    acknowledged: int
    indexed: int
    indexed_without_2xx: int
    lost: int
    duplicated: int | None          # None: receipts cannot see duplicates
    statuses: dict[str, int]
    transport_errors: dict[str, int]
    requests: int
    resent: int
    latency: dict[str, float | int | None]
    sending_seconds: float
    sent_per_second: float
    checking_seconds: float
    polls: int
    failed_polls: int
    last_poll_error: str | None
    lost_ids: list[str]
    duplicated_ids: list[str]
    lost_states: dict[str, int] | None  # receipts: what the lost events' last receipts said
    unsearchable_indices: list[str]     # matched the index pattern but cannot be searched by log_id
    exit_code: int
    verdict: str


def percentile(values: list[float], percent: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least `percent` % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(percent / 100 * len(ordered)), 1) - 1]


def figures(plan: Plan, ledger: Ledger, seen: Observations) -> Figures:
    acknowledged = ledger.acknowledged()
    acknowledged_ids = {sent.log_id for sent in acknowledged}
    indexed = [sent for sent in acknowledged if sent.log_id in seen.first_found]
    lost_ids = [sent.log_id for sent in acknowledged if sent.log_id not in seen.first_found]
    duplicated_ids = [log_id for log_id, count in seen.documents.items() if count > 1]
    duplicated = sum(seen.documents[log_id] - 1 for log_id in duplicated_ids) if seen.sees_duplicates else None
    delays = [max(seen.first_found[sent.log_id] - sent.acknowledged_at, 0.0) for sent in indexed]
    sending_seconds = (ledger.finished_at or 0.0) - (ledger.started_at or 0.0)
    lost_states = None
    if not seen.sees_duplicates:
        lost_states = {}
        for log_id in lost_ids:
            state = seen.states.get(log_id, {}).get("state", "unknown")
            lost_states[state] = lost_states.get(state, 0) + 1
    exit_code, verdict = _verdict(plan, len(acknowledged), lost_ids, duplicated or 0, seen)
    return Figures(
        run_id=ledger.run_id, url=plan.url + plan.route, checked_by=seen.check,
        sent=len(ledger.events), acknowledged=len(acknowledged), indexed=len(indexed),
        indexed_without_2xx=sum(1 for log_id in seen.first_found if log_id not in acknowledged_ids),
        lost=len(lost_ids), duplicated=duplicated,
        statuses={str(status): count for status, count in sorted(ledger.statuses.items())},
        transport_errors=dict(sorted(ledger.transport_errors.items())),
        requests=sum(len(sent.answers) for sent in ledger.events), resent=ledger.resent,
        latency={**{name: _milliseconds(value) for name, value in (
                    ("p50", percentile(delays, 50)), ("p95", percentile(delays, 95)), ("p99", percentile(delays, 99)),
                    ("max", max(delays, default=None)))},
                 "count": len(delays),
                 "resolution_seconds": plan.poll_interval_seconds},
        sending_seconds=round(sending_seconds, 3),
        sent_per_second=round(len(ledger.events) / sending_seconds, 1) if sending_seconds > 0 else 0.0,
        checking_seconds=round(max(seen.ended_at - (ledger.finished_at or seen.ended_at), 0.0), 3),
        polls=seen.polls, failed_polls=seen.failed_polls, last_poll_error=seen.last_poll_error,
        lost_ids=lost_ids[:IDS_SHOWN], duplicated_ids=duplicated_ids[:IDS_SHOWN], lost_states=lost_states,
        unsearchable_indices=sorted(seen.unsearchable),
        exit_code=exit_code, verdict=verdict)


def _milliseconds(seconds: float | None) -> float | None:
    """Seconds to the millisecond: the figures are good to a poll interval, more digits would say otherwise."""
    return None if seconds is None else round(seconds, 3)


def _verdict(plan: Plan, acknowledged: int, lost_ids: list[str], duplicated: int,
             seen: Observations) -> tuple[int, str]:
    if acknowledged == 0:
        return EXIT_CANNOT_CHECK, "CANNOT CHECK: no event was answered 2xx, so there is nothing to check (see answers)"
    if seen.polls == seen.failed_polls:
        return EXIT_CANNOT_CHECK, f"CANNOT CHECK: no check answered ({seen.last_poll_error})"
    if lost_ids and seen.interrupted:
        return EXIT_CANNOT_CHECK, (f"INTERRUPTED: {len(lost_ids)} events answered 2xx not found yet; "
                                   "too early to call them lost")
    if lost_ids and seen.last_poll_failed:
        # Not found, but the last look failed: the events may be there. Only a look that answered says lost.
        return EXIT_CANNOT_CHECK, (f"CANNOT CHECK: {len(lost_ids)} events answered 2xx not found, and the last "
                                   f"check failed ({seen.last_poll_error})")
    problems = []
    if lost_ids:
        problems.append(f"{len(lost_ids)} of {acknowledged} events answered 2xx were not indexed within "
                        f"{plan.deadline_seconds:g} s of the last send")
    if duplicated:
        problems.append(f"{duplicated} documents more than one per id")
    if problems:
        return EXIT_LOST_OR_DUPLICATED, "FAIL: " + "; ".join(problems)
    once = ", each exactly once" if seen.sees_duplicates else " (receipts cannot see duplicates)"
    return EXIT_PASSED, f"PASS: all {acknowledged} events answered 2xx are indexed{once}"


def as_json(result: Figures) -> str:
    return json.dumps(asdict(result), indent=2)


def as_table(result: Figures, plan: Plan) -> str:
    latency = result.latency
    if latency["count"]:
        delays = "  ".join(f"{name} {latency[name]:.1f} s" for name in ("p50", "p95", "p99", "max"))
        delays += f"   (2xx to the first poll that found it; resolution {plan.poll_interval_seconds:g} s)"
    else:
        delays = "none indexed"
    answers = ", ".join(f"{status} ×{count}" for status, count in result.statuses.items()) or "none"
    if result.transport_errors:
        answers += "; no answer: " + ", ".join(f"{name} ×{count}" for name, count in result.transport_errors.items())
    lost = f"{result.lost}"
    if result.lost_states:
        lost += "    last receipts: " + ", ".join(f"{state} {count}" for state, count in result.lost_states.items())
    duplicated = ("not visible: receipts cannot see duplicates (check with --opensearch)"
                  if result.duplicated is None else str(result.duplicated))
    polls = f"{result.polls} polls"
    if result.failed_polls:
        polls += f" ({result.failed_polls} failed, last: {result.last_poll_error})"
    polls += f", done {result.checking_seconds:.1f} s after the last send"
    rows = [
        ("sent", f"{result.sent}    in {result.sending_seconds:.1f} s ({result.sent_per_second:g}/s), "
                 f"{result.requests} requests, {result.resent} resent"),
        ("answered 2xx", str(result.acknowledged)),
        ("indexed", f"{result.indexed}    of those answered 2xx (+{result.indexed_without_2xx} indexed without a 2xx)"),
        ("lost", lost),
        ("duplicated", duplicated),
        ("answers", answers),
        ("delivery latency", delays),
        ("checking", polls),
    ]
    lines = [f"verify run {result.run_id}: {result.sent} events to {result.url} at {plan.rate_per_second:g}/s",
             f"checked in {result.checked_by}, every {plan.poll_interval_seconds:g} s", ""]
    lines += [f"{name:<18}{value}" for name, value in rows]
    if result.unsearchable_indices:
        lines += ["", f"not searched: {len(result.unsearchable_indices)} indices match the pattern but their log_id "
                      f"is not a keyword (made without the collector's template): "
                      f"{' '.join(result.unsearchable_indices[:IDS_SHOWN])}"]
    lines += ["", result.verdict]
    if result.lost_ids:
        lines.append(f"lost ids (first {IDS_SHOWN}): {' '.join(result.lost_ids)}")
    if result.duplicated_ids:
        lines.append(f"duplicated ids (first {IDS_SHOWN}): {' '.join(result.duplicated_ids)}")
    return "\n".join(lines)
