"""RULES_FILE read and checked whole: every mistake is named by its place in the file
(`sources.shop-web.events.purchase.policy: ...`), and each event's JSON Schema is compiled once, here, by
jsonschema-rs (a compiled Rust validator: 1.5 µs for a valid six-property event where fastjsonschema takes
4.9 µs, and 0.2 ms to compile a schema where it takes 7 ms; docs/rules.md).

The file's format is docs/rules.md's. The keys read by the transforms (`bots`, `pii`, each event's `sample`
and `drop`) are checked by rules/transforms.py; this module checks that no other key is there.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import yaml

from .errors import RulesError
from .typed import TypedField, typed_fields

POLICIES = ("reject", "quarantine", "tag")
UNPLANNED = ("allow", "tag", "reject")
_SOURCE_KEYS = ("unplanned", "bots", "pii", "events")
_EVENT_KEYS = ("policy", "sample", "drop", "properties")
# "events" is the JWT API; the others are SOURCES_FILE's names (sources.py).
_SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# As long as an event name may be (api/validation.py's MAX_STRING_CHARS).
_MAX_EVENT_NAME_CHARS = 1024


@dataclass(frozen=True)
class EventPlan:
    name: str
    policy: str
    # Compiled once; None when the event lists no `properties` schema (any properties pass).
    validator: Any
    # Its properties copied as typed fields (typed.py), by property name.
    typed: dict[str, TypedField]


@dataclass(frozen=True)
class SourcePlan:
    name: str
    unplanned: str
    events: dict[str, EventPlan]
    # Every typed property of the source's events: one type each (refused at load otherwise).
    typed: dict[str, TypedField]


@dataclass(frozen=True)
class ParsedFile:
    version: str
    # Each source's section as written, for the transforms to compile.
    sections: dict[str, dict[str, Any]]
    plans: dict[str, SourcePlan]


def parse_file(text: str) -> ParsedFile:
    """The whole file checked and compiled, or RulesError naming the first thing wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"not YAML: {exc}") from None
    data = _mapping(data, "the file", ("version", "sources"))
    label = data.get("version", "rules")
    if not isinstance(label, str) or not _LABEL.match(label):
        raise RulesError(f"version: {label!r} is not a label (letters, digits, '.', '_', '-'; at most 64)")
    sources = _mapping(data.get("sources"), "sources", None)
    sections, plans = {}, {}
    for name, section in sources.items():
        where = f"sources.{name}"
        if not isinstance(name, str) or not _SOURCE_NAME.match(name):
            raise RulesError(f"{where}: not a source name (\"events\" for the JWT API, or a SOURCES_FILE name)")
        sections[name] = _mapping(section, where, _SOURCE_KEYS)
        plans[name] = _source_plan(name, sections[name])
    version = f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    return ParsedFile(version, sections, plans)


def _source_plan(name: str, section: dict[str, Any]) -> SourcePlan:
    where = f"sources.{name}"
    unplanned = section.get("unplanned", "allow")
    if unplanned not in UNPLANNED:
        raise RulesError(f"{where}.unplanned: {unplanned!r} is not one of {', '.join(UNPLANNED)}")
    events = {}
    for event_name, config in _mapping(section.get("events", {}), f"{where}.events", None).items():
        event_where = f"{where}.events.{event_name}"
        if not isinstance(event_name, str) or not 0 < len(event_name) <= _MAX_EVENT_NAME_CHARS:
            raise RulesError(f"{event_where}: an event name is a string of 1 to {_MAX_EVENT_NAME_CHARS} characters")
        events[event_name] = _event_plan(event_name, _mapping(config or {}, event_where, _EVENT_KEYS), event_where)
    typed: dict[str, TypedField] = {}
    for event in events.values():
        for prop, field in event.typed.items():
            earlier = typed.setdefault(prop, field)
            if earlier.mapping != field.mapping:
                raise RulesError(f"{where}.events.{event.name}.properties.properties.{prop}: typed as {field.kind}, "
                                 f"but event {earlier.event!r} of the same source types it as {earlier.kind} "
                                 "(one source's indices hold one type per field)")
    return SourcePlan(name, unplanned, events, typed)


def _event_plan(name: str, config: dict[str, Any], where: str) -> EventPlan:
    policy = config.get("policy", "reject")
    if policy not in POLICIES:
        raise RulesError(f"{where}.policy: {policy!r} is not one of {', '.join(POLICIES)}")
    schema = config.get("properties")
    if schema is None:
        return EventPlan(name, policy, None, {})
    if not isinstance(schema, dict):
        raise RulesError(f"{where}.properties: a JSON Schema is a mapping")
    _refuse_remote_refs(schema, f"{where}.properties")
    try:
        validator = jsonschema_rs.validator_for(schema, validate_formats=True)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise RulesError(f"{where}.properties: not a valid JSON Schema: {str(exc).splitlines()[0]}") from None
    return EventPlan(name, policy, validator, typed_fields(schema, name))


def _refuse_remote_refs(schema: Any, where: str) -> None:
    """A `$ref` out of the file would have the collector fetch a URL at load: only `#...` is allowed."""
    stack = [(schema, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$dynamicRef") and not (isinstance(value, str) and value.startswith("#")):
                    raise RulesError(f"{path}.{key}: {value!r} points outside the file (only #... references)")
                stack.append((value, f"{path}.{key}"))
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node))


def _mapping(value: Any, where: str, allowed: tuple[str, ...] | None) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise RulesError(f"{where}: expected a mapping, got {type(value).__name__}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise RulesError(f"{where}.{key}: unknown key (expected {', '.join(allowed)})")
    return value
