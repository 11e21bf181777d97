"""An event's verdict under its source's rules, in the fixed order of docs/rules.md: 1 drop by name, 2 bots,
3 sampling, 4 the plan (on the values as sent), 5 PII (after the plan, so that a hashed e-mail is not held to
`format: email`), 6 the typed copies (of the scrubbed values).

Every outcome other than "kept" is counted, by source, event and rule; the event label is a name from the file
or "(unplanned)", so a sender cannot grow the series.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

from .. import metrics
from .book import SourceRules
from .typed import typed_copy

UNPLANNED_LABEL = "(unplanned)"
# A document lists at most this many violations; an answer names the first.
MAX_VIOLATIONS = 10
# Past this many violations an event's typed copies are all left out rather than told apart.
MAX_ERRORS_READ = 100
# Outcomes that keep the event out of every index, answered 2xx all the same: the client must not resend it.
DISCARDED = frozenset({"dropped", "bot_dropped", "sampled_out"})


class Verdict:
    __slots__ = ("outcome", "violations", "bot", "properties", "typed", "reason", "field")

    def __init__(self, outcome: str) -> None:
        self.outcome = outcome  # kept, tagged, quarantined, rejected, or one of DISCARDED
        # A list only when there are some: most events have none, and every container made costs the GC.
        self.violations: list[str] | tuple[()] = ()
        self.bot = False
        self.properties: Any = None  # the properties to index: scrubbed of PII
        self.typed: dict[str, Any] | None = None
        self.reason = ""  # a rejection's message
        self.field: str | None = None


def judge(rules: SourceRules, name: str | None, properties: dict[str, Any] | None, field: str,
          user_agent: str | None, log_id: str) -> Verdict:
    """`field` names where the properties are in the request (`param`, `properties`, `traits`)."""
    plan = rules.plan.events.get(name) if name is not None else None
    label = name if plan is not None else UNPLANNED_LABEL
    transforms = rules.transforms
    bot = False
    if transforms is not None:
        if transforms.dropped_by_name(name):
            return _discard("dropped", rules, label, "drop")
        if transforms.bots != "off" and transforms.is_bot(user_agent):
            if transforms.bots == "drop":
                return _discard("bot_dropped", rules, label, "bots")
            bot = True
            _count("bot_flagged", rules, label, "bots")
        if transforms.sampled_out(name, log_id):
            return _discard("sampled_out", rules, label, "sample")
    verdict = Verdict("kept")
    verdict.bot = bot
    broken: frozenset[str] = frozenset()
    if plan is None:
        policy = rules.plan.unplanned
        if policy != "allow":
            verdict.violations = ["event: unplanned"]
            verdict.reason = f"event {name!r} is not in source {rules.plan.name!r}'s plan (rule unplanned)"
            verdict.field = "event"
            rule = "unplanned"
    elif plan.validator is not None and not plan.validator.is_valid(properties or {}):
        policy = plan.policy
        # Bounded: a hostile event could break a rule per element of a long list.
        errors = list(islice(plan.validator.iter_errors(properties or {}), MAX_ERRORS_READ))
        broken = (frozenset(plan.typed) if len(errors) == MAX_ERRORS_READ else
                  frozenset(str(error.instance_path[0]) for error in errors if error.instance_path))
        verdict.violations = [f"{_path(field, error)}: {error.kind.name}" for error in errors[:MAX_VIOLATIONS]]
        first = errors[0]
        rule = first.kind.name
        verdict.field = _path(field, first)
        verdict.reason = (f"event {name!r} does not match source {rules.plan.name!r}'s plan: {verdict.field}: "
                          f"{first.message} (rule {rule})")
    if verdict.violations:
        verdict.outcome = {"reject": "rejected", "quarantine": "quarantined"}.get(policy, "tagged")
        _count(verdict.outcome, rules, label, rule)
        if verdict.outcome == "rejected":
            return verdict
    verdict.properties = properties if transforms is None or not properties else transforms.scrub(properties)
    if plan is not None and verdict.outcome != "quarantined":
        verdict.typed = typed_copy(plan.typed, verdict.properties, broken)
    return verdict


def _path(field: str, error: Any) -> str:
    path = ".".join([field, *map(str, error.instance_path)])
    if error.kind.name == "required":
        return f"{path}.{error.kind.property}"
    return path


def _discard(outcome: str, rules: SourceRules, label: str, rule: str) -> Verdict:
    _count(outcome, rules, label, rule)
    return Verdict(outcome)


def _count(outcome: str, rules: SourceRules, label: str, rule: str) -> None:
    metrics.rules_events.labels(outcome, rules.plan.name, label, rule).inc()
