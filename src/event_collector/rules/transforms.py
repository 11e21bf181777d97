"""A source's transforms, compiled once from its section of RULES_FILE: drop by name, bots, sampling and PII
(docs/rules.md, "Transforms"). The pipeline calls them in the file's fixed order (rules/judge.py); each is a
pure function of its arguments and the compiled section, and none changes what it is given.

Costs per event (bench/rules_transforms.py): a set lookup to drop by name, a dict lookup for the sample of an
event without one, one blake2b of the log_id with one; a cached bot verdict is one LRU hit; PII costs one dict
lookup per rule and path segment, plus one HMAC-SHA256 per hashed value.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from .bots import bot_detector
from .errors import RulesError
from .pii import ACTIONS, PiiRule, hasher, mask

BOTS = ("off", "flag", "drop")
# A log_id's point in [0, 1) is its blake2b digest of this many bytes read as an integer over 2**64.
_SAMPLE_BYTES = 8
_SAMPLE_SPAN = 1 << (8 * _SAMPLE_BYTES)


class SourceTransforms:
    def __init__(self, bots: str, dropped: frozenset[str], keep_below: dict[str, int],
                 pii: tuple[PiiRule, ...]) -> None:
        self.bots = bots
        self._dropped = dropped
        # Event name -> the sample as a threshold on the log_id's 64-bit hash: kept when the hash is below it.
        # Events sampled at 1 are not listed, so they cost no hash.
        self._keep_below = keep_below
        self._pii = pii
        self._bots = bot_detector() if bots != "off" else None

    @classmethod
    def compile(cls, source_name: str, source_config: dict[str, Any], hash_key: bytes | None) -> "SourceTransforms":
        """Reads `bots`, `pii`, and each `events.<name>.sample` / `.drop`; raises RulesError naming the bad key
        (e.g. 'sources.events.pii.email: unknown action "crypt" (hash, mask, drop)'), or a hash rule without key.
        Other keys are plan.py's to check. With bots on, the ua-parser rules are loaded here (~0.7 s once per
        process), not on the first event."""
        where = f"sources.{source_name}"
        if not isinstance(source_config, dict):
            raise RulesError(f"{where}: expected a mapping, got {_kind(source_config)}")
        bots = _bots(source_config.get("bots", "off"), f"{where}.bots")
        pii = _pii_rules(source_config.get("pii"), f"{where}.pii", hash_key)
        events = source_config.get("events")
        if events is None:
            events = {}
        if not isinstance(events, dict):
            raise RulesError(f"{where}.events: expected a mapping, got {_kind(events)}")
        dropped, keep_below = set(), {}
        for name, config in events.items():
            event_where = f"{where}.events.{name}"
            if not isinstance(name, str) or not name:
                raise RulesError(f"{event_where}: an event name is a non-empty string")
            if config is None:
                continue
            if not isinstance(config, dict):
                raise RulesError(f"{event_where}: expected a mapping, got {_kind(config)}")
            if _drop(config.get("drop", False), f"{event_where}.drop"):
                dropped.add(name)
            sample = _sample(config.get("sample", 1), f"{event_where}.sample")
            if sample < 1:
                keep_below[name] = int(sample * _SAMPLE_SPAN)
        return cls(bots, frozenset(dropped), keep_below, pii)

    def dropped_by_name(self, event_name: str | None) -> bool:
        return event_name in self._dropped

    def is_bot(self, user_agent: str | None) -> bool:
        """Cached; crawlers/spiders (ua-parser), headless browsers and HTTP libraries (rules/bots.py). A
        missing User-Agent is not a bot. Always False when the source's bots is off."""
        return self._bots is not None and self._bots.is_bot(user_agent)

    def sampled_out(self, event_name: str | None, log_id: str) -> bool:
        """Deterministic on log_id, in every process and after every restart: a resent event gets the decision
        its first send got (blake2b, unkeyed and unsalted, so no per-process seed as Python's hash() has)."""
        keep_below = self._keep_below.get(event_name)  # type: ignore[arg-type]
        if keep_below is None:
            return False
        digest = hashlib.blake2b(log_id.encode("utf-8", "surrogatepass"), digest_size=_SAMPLE_BYTES).digest()
        return int.from_bytes(digest, "big") >= keep_below

    def scrub(self, properties: dict[str, Any] | None) -> dict[str, Any] | None:
        """The properties with the PII rules applied. Never changes its input: the result is a new dict when a
        rule changed something, else the input itself (so an event without PII costs no copy)."""
        if not self._pii or not isinstance(properties, dict):
            return properties
        for rule in self._pii:
            properties = rule.apply(properties)
        return properties


def _bots(value: Any, where: str) -> str:
    # YAML 1.1, which PyYAML reads, turns a bare `off` into false.
    if value is False:
        return "off"
    if value not in BOTS:
        raise RulesError(f"{where}: unknown value {_shown(value)} ({', '.join(BOTS)})")
    return value


def _pii_rules(pii: Any, where: str, hash_key: bytes | None) -> tuple[PiiRule, ...]:
    if pii is None:
        return ()
    if not isinstance(pii, dict):
        raise RulesError(f"{where}: expected a mapping of path to action, got {_kind(pii)}")
    rules = []
    for path, action in pii.items():
        rule_where = f"{where}.{path}"
        if not isinstance(path, str) or not path.strip():
            raise RulesError(f"{rule_where}: a path is a non-empty string (dots for nesting)")
        if any(not segment for segment in path.split(".")):
            raise RulesError(f"{rule_where}: empty segment in path {path!r} (dots separate keys: a.b.c)")
        if action not in ACTIONS:
            raise RulesError(f"{rule_where}: unknown action {_shown(action)} ({', '.join(ACTIONS)})")
        if action == "hash" and not hash_key:
            raise RulesError(f"{rule_where}: hash needs the setting RULES_HASH_KEY (the HMAC key; without it "
                             "a hash of a guessable value such as an e-mail could be reversed by guessing)")
        replace = hasher(hash_key) if action == "hash" else mask if action == "mask" else None
        rules.append(PiiRule(path, replace))
    # Deepest paths first: with `address: hash` and `address.street: drop`, the street is dropped before the
    # address is hashed whatever the order in the file, so the result does not depend on it.
    return tuple(sorted(rules, key=lambda rule: -len(rule.segments)))


def _drop(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise RulesError(f"{where}: expected true or false, got {_shown(value)}")
    return value


def _sample(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RulesError(f"{where}: expected a number from 0 to 1 (the fraction kept), got {_shown(value)}")
    if math.isnan(value) or not 0 <= value <= 1:
        raise RulesError(f"{where}: {value!r} is outside 0..1 (the fraction kept: 0.25 keeps a quarter)")
    return float(value)


def _shown(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else "null" if value is None else repr(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
