"""The files read again while serving: SOURCES_FILE (sources.py) and RULES_FILE (rules/), each looked at every
CHECK_SECONDS and read again when it changed, and both read again on SIGHUP (with one worker; with several,
uvicorn's supervisor takes SIGHUP and each worker reads a changed file within CHECK_SECONDS on its own).

A RULES_FILE is put in force only when it parses and compiles whole and its typed properties agree with the
mappings of the indices that exist (rules/cluster.py); otherwise it is refused with a logged message and the
rules in force stay. Requests are never held: each request is judged by the reading in force when it came
(api/rules_gate.py), and the new one is swapped in whole. Its typed mappings go to the shipper's index
templates (shipper/template.py) before it is in force, so its first document has its template.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from ..exceptions import ConfigError, OpenSearchUnavailable
from ..rules.book import RuleBook, Rules, source_family
from ..rules.cluster import mapping_conflicts, retyped_fields
from ..rules.errors import RulesError
from ..sources import Sources

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0


class ConfigFiles:
    def __init__(self, sources: Sources, rules: Rules | None, collector: Any, environment: str) -> None:
        self.sources = sources
        self.rules = rules
        self._environment = environment
        # The shipper's client and template guard (lifecycle.Collector); ACK_MODE=kafka's collector has neither.
        self._client = getattr(collector, "client", None)
        self._template = getattr(collector, "template", None)
        self._rules_lock = asyncio.Lock()
        if rules is not None:
            # Before the collector starts: the templates it installs first have the typed fields.
            self._hand_to_templates(rules.book)

    def family_of(self, source: str) -> str:
        return source_family(source, self.sources.book, self._environment)

    async def start(self, workers: int) -> None:
        """At start-up, once the collector runs: the plan held against the live mappings (a conflict stops the
        start; OpenSearch out of reach skips the check), and SIGHUP taken with one worker."""
        if self.rules is not None:
            try:
                await self._refuse_conflicts(self.rules.book)
            except OpenSearchUnavailable as exc:
                log.warning("RULES_FILE %s: the live mappings could not be read (%s): its typed fields are not "
                            "checked against existing indices", self.rules.file.path, exc)
        if workers == 1 and (self.sources.path or self.rules is not None):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_hangup)

    def _on_hangup(self) -> None:
        self.sources.reload()
        if self.rules is not None:
            asyncio.ensure_future(self.reload_rules())

    async def watch(self) -> None:
        while self.sources.path or self.rules is not None:
            await asyncio.sleep(CHECK_SECONDS)
            if self.sources.changed():
                self.sources.reload()
            if self.rules is not None and self.rules.changed():
                await self.reload_rules()

    async def reload_rules(self) -> bool:
        """Read RULES_FILE again and put it in force; on any fault keep the rules in force and say why."""
        assert self.rules is not None
        async with self._rules_lock:
            in_force = self.rules.book
            try:
                # Compiling fifty schemas takes milliseconds: off the event loop, which goes on answering.
                book = await asyncio.to_thread(self.rules.read)
                if book.version == in_force.version:
                    return False
                await self._refuse_conflicts(book, in_force)
            except (ConfigError, OpenSearchUnavailable) as exc:
                # Formatted here: each refusal is its own kind for logs.RepeatFilter, so none is held back.
                log.error(f"{exc}; the rules in force stay (version {in_force.version})")
                return False
            self._hand_to_templates(book)
            self.rules.adopt(book)
            return True

    async def _refuse_conflicts(self, book: RuleBook, in_force: RuleBook | None = None) -> None:
        """RulesError naming each typed field the rules in force or an existing index type otherwise. When
        OpenSearch cannot say, OpenSearchUnavailable, unless the typed fields are those in force already."""
        if in_force is not None and book.typed_by_source() == in_force.typed_by_source():
            return
        where = f"RULES_FILE {self.rules.file.path if self.rules else ''}: version {book.version}"
        conflicts = retyped_fields(book, in_force) if in_force is not None else []
        if self._client is not None:
            try:
                conflicts += await mapping_conflicts(book, self._client.request, self.family_of)
            except OpenSearchUnavailable as exc:
                raise OpenSearchUnavailable(f"{where} changes typed fields, which cannot be checked against the "
                                            f"live mappings now: {exc}") from None
        if conflicts:
            raise RulesError(f"{where} conflicts with the typed fields in force: {'; '.join(conflicts)}")

    def _hand_to_templates(self, book: RuleBook) -> None:
        if self._template is not None:
            self._template.set_own_fields(book.typed_mappings(self.sources.book, self._environment))
