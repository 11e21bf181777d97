"""One reading of RULES_FILE (RuleBook), and the reading in force (Rules): read at start-up, where a bad file
stops the collector, and again on SIGHUP and when the file changes, where a bad file is refused with a logged
message and the last good reading stays (watched_file.py, as SOURCES_FILE)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from .. import metrics
from ..exceptions import ConfigError
from ..watched_file import WatchedFile
from .errors import RulesError
from .plan import SourcePlan, parse_file
from .transforms import SourceTransforms
from .typed import TypedField, typed_mapping

log = logging.getLogger(__name__)

# The JWT API's name in the file (/events, /events/batch, /events/beacon).
JWT_SOURCE = "events"


@dataclass(frozen=True)
class SourceRules:
    plan: SourcePlan
    transforms: SourceTransforms


class RuleBook:
    def __init__(self, version: str, sources: dict[str, SourceRules]) -> None:
        # "<label>-<first 12 hex of the file's sha256>": in every document, /readyz and /metrics.
        self.version = version
        self.sources = sources
        # The field as each document ends with it, spliced in (api/rules_gate.py).
        self.version_field = b',"rules_version":' + msgspec.json.encode(version) + b"}"

    @classmethod
    def parse(cls, text: str, hash_key: bytes | None) -> "RuleBook":
        parsed = parse_file(text)
        sources = {name: SourceRules(parsed.plans[name], SourceTransforms.compile(name, section, hash_key))
                   for name, section in parsed.sections.items()}
        return cls(parsed.version, sources)

    def typed_by_source(self) -> dict[str, dict[str, TypedField]]:
        return {name: rules.plan.typed for name, rules in self.sources.items() if rules.plan.typed}

    def typed_mappings(self, sources: Any, environment: str) -> dict[str, dict[str, Any]]:
        """The `typed` mappings the index templates add, by family (shipper/template.py's own fields);
        `sources` is a sources.SourceBook (source_family)."""
        return {source_family(name, sources, environment): typed_mapping(typed)
                for name, typed in self.typed_by_source().items()}


class Rules:
    """The rules in force; `book` is replaced whole by `adopt`, so a request sees one reading throughout."""

    def __init__(self, path: str, hash_key: str) -> None:
        self.file = WatchedFile("RULES_FILE", path)
        self.hash_key = hash_key.encode() if hash_key else None
        self.book = self.read()
        self._show(None, self.book)

    def read(self) -> RuleBook:
        """The file read and compiled, or RulesError (a ConfigError) naming the file and the place in it."""
        text = self.file.read_text()
        try:
            return RuleBook.parse(text, self.hash_key)
        except (RulesError, ConfigError) as exc:
            raise RulesError(f"RULES_FILE {self.file.path}: {exc}") from None

    def changed(self) -> bool:
        return self.file.changed()

    def adopt(self, book: RuleBook) -> None:
        previous, self.book = self.book, book
        self._show(previous, book)
        # Formatted here: each version is its own kind for logs.RepeatFilter, so none is held back.
        log.info(f"RULES_FILE {self.file.path} in force: version {book.version}, {len(book.sources)} sources")

    @staticmethod
    def _show(previous: RuleBook | None, book: RuleBook) -> None:
        if previous is not None and previous.version != book.version:
            metrics.rules_info.labels(previous.version).set(0)
        metrics.rules_info.labels(book.version).set(1)


def source_family(name: str, sources: Any, environment: str) -> str:
    """The index family of a source of the file: the JWT API's `events_{environment}`, a tracking source's
    `{prefix}_{environment}` by SOURCES_FILE (`sources`, a sources.SourceBook; its default prefix when absent)."""
    if name == JWT_SOURCE:
        return f"events_{environment}"
    source = sources.sources.get(name)
    return f"{source.prefix if source is not None else f'events_{name}'}_{environment}"
