"""RULES_FILE at the door (docs/rules.md): the pipeline hands its decoded events to `prepare` (api/pipeline.py),
which screens them, has the pipeline build the documents of those kept, and stamps them; none of it runs when
RULES_FILE is unset.

`screen` judges each event under its source's rules (rules/judge.py; the JWT API is the source "events"):
an event rejected by its plan refuses a single-event request (400 naming the event, the path and the rule)
and is rejected by position in a batch, as an invalid event is (the others are kept); an event dropped,
sampled out or dropped as a bot is answered 2xx and counted as accepted (the client must not send it again),
and never kept; the others are kept with their properties scrubbed of PII. `stamp` adds to each document the
rules' version, and the event's violations, bot flag and typed copies, and sends a quarantined event to
`quarantine_{index}`.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

import msgspec

from ..exceptions import InvalidEvent
from ..rules.book import JWT_SOURCE, Rules
from ..rules.judge import DISCARDED, judge
from .answers import Answer
from .pipeline import IngestRequest

_encode = msgspec.json.encode
# Quarantined events go to `quarantine_{prefix}_{environment}_{YYYY}-{M}`: outside every `events_*` pattern,
# so no dashboard counts them, and a family (and template) of their own, without the typed fields.
QUARANTINE_PREFIX = "quarantine_"
# Where each message type of the tracking API has its properties.
_TRACKED_FIELD = {"track": "properties", "page": "properties", "screen": "properties", "identify": "traits",
                  "group": "traits"}


class RulesGate:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    def prepare(self, request: IngestRequest, build: Callable[[IngestRequest], None]) -> Answer | None:
        """The pipeline's last step under the rules: an Answer refusing the request, or None with the kept
        events' documents in request.envelopes."""
        refusal = self.screen(request)
        if refusal is not None:
            return refusal
        build(request)
        self.stamp(request)
        return None

    def screen(self, request: IngestRequest) -> Answer | None:
        """Judge the request's events; None when the kept ones (maybe none) are in request.events."""
        book = self.rules.book
        request.rules_book = book  # one reading for the whole request, even if the file is read again meanwhile
        request.verdicts = None
        source = book.sources.get(JWT_SOURCE if request.source is None else request.source.name)
        if source is None:
            return None
        batch = request.batch
        single = batch is None or getattr(batch, "single", False)
        verdicts, kept, positions = [], [], []
        for number, event in enumerate(request.events):
            if request.source is None:
                verdict = judge(source, event.event, event.param, "param", request.copied["user-agent"],
                                event.log_id)
                if verdict.outcome not in DISCARDED and verdict.outcome != "rejected" and event.param is not None:
                    event.param = verdict.properties
            else:
                verdict = _judge_message(source, event, request.copied["user-agent"])
            if verdict.outcome == "rejected":
                if single:
                    return request.route.refuse(InvalidEvent(verdict.reason, verdict.field))
                assert batch is not None
                batch.rejected.append(batch.rejection(batch.positions[number], verdict.reason, verdict.field))
            elif verdict.outcome in DISCARDED:
                request.discarded += 1
            else:
                verdicts.append(verdict)
                kept.append(event)
                if batch is not None:
                    positions.append(batch.positions[number])
        if len(kept) < len(request.events):
            request.events = kept
            if batch is not None:
                batch.positions = positions
                batch.rejected.sort(key=lambda rejection: rejection.index)
        request.verdicts = verdicts
        return None

    def stamp(self, request: IngestRequest) -> None:
        """Each document with the rules' version, and what its verdict adds: the document is a JSON object,
        whose closing brace gives way to the added fields (encoding it again would cost more than the rules)."""
        version_field = request.rules_book.version_field
        verdicts = request.verdicts
        for number, envelope in enumerate(request.envelopes):
            verdict = verdicts[number] if verdicts is not None else None
            if verdict is None or not (verdict.violations or verdict.bot or verdict.typed):
                envelope.document = envelope.document[:-1] + version_field
                continue
            added = [envelope.document[:-1], version_field[:-1]]
            if verdict.violations:
                added.append(b',"violations":' + _encode(verdict.violations))
            if verdict.bot:
                added.append(b',"bot":true')
            if verdict.typed:
                added.append(b',"typed":' + _encode(verdict.typed))
            added.append(b"}")
            envelope.document = b"".join(added)
            if verdict.outcome == "quarantined":
                envelope.index = QUARANTINE_PREFIX + envelope.index


def _judge_message(source: Any, message: Any, header_agent: str | None):
    """A tracking API message (api/tracking.py): its name is `event` for a track, else its type; its properties
    are `properties` or `traits` (identify's and group's, which rudder-sdk-python sends in context.traits)."""
    kind = message.type
    field = _TRACKED_FIELD.get(kind, "properties")
    context = message.context or {}
    properties = getattr(message, field) if kind in _TRACKED_FIELD else None
    in_context = field == "traits" and properties is None and isinstance(context.get("traits"), dict)
    if in_context:
        properties = context["traits"]
    agent = context.get("userAgent")
    agent = agent if isinstance(agent, str) else header_agent
    # A message without messageId gets a new id when its document is built: a resend is a new event anyway.
    log_id = message.messageId or uuid.uuid4().hex
    verdict = judge(source, message.event if kind == "track" else kind, properties, field, agent, log_id)
    if verdict.outcome not in DISCARDED and verdict.outcome != "rejected" and properties is not None:
        if in_context:
            message.context = {**context, "traits": verdict.properties}
        else:
            setattr(message, field, verdict.properties)
    return verdict
