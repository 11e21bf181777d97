"""The index templates that map every field of the collector's documents.

A family of indices is `{prefix}_{SERVER_ENVIRONMENT}`, its indices `{family}_{YYYY}-{M}`: `events_{environment}`
for the JWT API, `events_{source}_{environment}` (or the source's own prefix) for each source of the tracking
API (sources.py). Each family has a template of its own, of the same mappings, named after it and installed
before the first bulk request that writes into it: the shipper learns the families from the indices it
writes, so a source added at run time (or in an indexer that never reads SOURCES_FILE) gets its template.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

import msgspec

from ..exceptions import OpenSearchUnavailable
from ..retry import pause_reason
from .client import OpenSearchClient

log = logging.getLogger(__name__)

_KEYWORD = {"type": "keyword"}
_DATE = {"type": "date"}
# Bumped with every change of the mappings, so an operator can tell which one a cluster holds
# (GET _index_template/events_<environment>).
TEMPLATE_VERSION = 4


def _keywords(*names: str) -> dict[str, Any]:
    return {"properties": {name: _KEYWORD for name in names}}


# The fields added after the original's shape (docs/client-time.md, docs/enrichment.md). Indices created
# before them get these mappings too (`add_new_fields`), so they are never mapped by guess.
ADDED_FIELDS: dict[str, Any] = {
    "event_time": _DATE,
    "event_time_clamped": {"type": "boolean"},
    "timestamp": _DATE,
    "sent_at": _DATE,
    "client_ip": {"type": "ip"},
    "geo": _keywords("country_iso_code", "country_name", "region_iso_code", "region_name", "city_name"),
    "user_agent_info": _keywords("browser_family", "browser_version", "os_family", "os_version", "device_family",
                                 "device_brand", "device_model"),
    # The tracking API's (version 3): README, "The tracking API's fields".
    "type": _KEYWORD,
    "anonymous_id": _KEYWORD,
    "source": _KEYWORD,
    "group_id": _KEYWORD,
    "previous_id": _KEYWORD,
    "traits": {"type": "flat_object"},
    "context": {"type": "flat_object"},
    "integrations": {"type": "flat_object"},
    "message_id_generated": {"type": "boolean"},
    # RULES_FILE's (version 4): docs/rules.md. A plan's typed properties (`typed.*`) are the family's own.
    "rules_version": _KEYWORD,
    "violations": _KEYWORD,
    "bot": {"type": "boolean"},
}


def template_name(environment: str, prefix: str = "events") -> str:
    return f"{prefix}_{environment}"


def family_of(index: str) -> str:
    """The family an index belongs to: its name without the month."""
    return index.rpartition("_")[0]


def index_template(environment: str, prefix: str = "events") -> dict[str, Any]:
    return _family_template(template_name(environment, prefix))


def _family_template(family: str, own_fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "index_patterns": [f"{family}_*"],
        "version": TEMPLATE_VERSION,
        "template": {
            "mappings": {
                "properties": {
                    "log_id": _KEYWORD,
                    "user_id": _KEYWORD,
                    "device_uuid": _KEYWORD,
                    "app_version": _KEYWORD,
                    "os_version": _KEYWORD,
                    "user_agent": _KEYWORD,
                    "received_at": {"type": "date"},
                    "event_info": {
                        "properties": {
                            "page": _KEYWORD,
                            "event": _KEYWORD,
                            "label": _KEYWORD,
                            "target": _KEYWORD,
                            "section": _KEYWORD,
                            # flat_object: free-form params can neither explode nor conflict in the mapping.
                            "param": {"type": "flat_object"},
                        }
                    },
                    **ADDED_FIELDS,
                    **(own_fields or {}),
                }
            }
        },
    }


async def install_template(client: OpenSearchClient, family: str,
                           own_fields: dict[str, Any] | None = None) -> tuple[int, Any]:
    body = msgspec.json.encode(_family_template(family, own_fields))
    return await client.request("PUT", f"/_index_template/{family}", body)


async def add_new_fields(client: OpenSearchClient, family: str,
                         own_fields: dict[str, Any] | None = None) -> tuple[int, Any]:
    body = msgspec.json.encode({"properties": {**ADDED_FIELDS, **(own_fields or {})}})
    return await client.request("PUT", f"/{family}_*/_mapping?allow_no_indices=true&ignore_unavailable=true", body)


class TemplateGuard:
    """Installs the template once OpenSearch answers, before the first bulk request creates an index.

    Shippers call `ensure` before every request; after one success it costs nothing. While OpenSearch
    cannot take it (unreachable, overloaded, or refusing the credentials) delivery waits. If OpenSearch
    refuses the template itself (another 4xx), the error is logged and shipping goes on: events are worth
    more than a mapping.
    """

    def __init__(self, client: OpenSearchClient, environment: str) -> None:
        self._client = client
        # The JWT API's family, installed at start-up; the others when their first index is written.
        self._default = template_name(environment)
        self._settled: set[str] = set()
        self._settled_indices: set[str] = set()
        self._lock = asyncio.Lock()
        # Mappings of some families only, by family: a tracking plan's typed properties (rules/typed.py).
        self._own_fields: dict[str, dict[str, Any]] = {}

    def set_own_fields(self, by_family: dict[str, dict[str, Any]]) -> None:
        """The families' own mappings (RULES_FILE read or read again): a family whose mappings changed has its
        template installed again, and its existing indices given the new fields, before its next request."""
        changed = {family for family in {*by_family, *self._own_fields}
                   if by_family.get(family) != self._own_fields.get(family)}
        self._own_fields = dict(by_family)
        self._settled -= changed
        self._settled_indices = {index for index in self._settled_indices if family_of(index) not in changed}

    async def ensure(self, indices: Iterable[str] = ()) -> None:
        """The templates of the default family and of these indices' families are in place; raises
        OpenSearchUnavailable while OpenSearch cannot be reached."""
        indices = set(indices) - self._settled_indices  # a batch writes into one or two indices, of a month
        families = {family_of(index) for index in indices}
        if self._default in self._settled and not families:
            return
        async with self._lock:
            for family in sorted({self._default, *families} - self._settled):
                await self._install(family)
        self._settled_indices.update(indices)

    async def _install(self, family: str) -> None:
        own_fields = self._own_fields.get(family)
        status, body = await install_template(self._client, family, own_fields)
        if 200 <= status < 300:
            log.info("index template %s installed", family)
            await self._add_new_fields(family, own_fields)
        elif (reason := pause_reason(status, body)) is not None:
            # Overloaded, down or misconfigured (401, 403, 404, a proxy's refusal): shipping now would
            # create indices without the mapping, so delivery waits for the template.
            raise OpenSearchUnavailable(f"installing the index template: {reason}")
        else:
            log.error("OpenSearch refused index template %s (%s): %s", family, status, body)
        if self._own_fields.get(family) == own_fields:  # else they changed meanwhile: install again
            self._settled.add(family)

    async def _add_new_fields(self, family: str, own_fields: dict[str, Any] | None) -> None:
        """A template shapes only the indices created after it: an index of this month, created before an
        upgrade, gets the added fields' mappings here rather than mappings guessed from the first values."""
        status, body = await add_new_fields(self._client, family, own_fields)
        if (reason := pause_reason(status, body)) is not None:
            raise OpenSearchUnavailable(f"adding new fields to existing indices: {reason}")
        if not 200 <= status < 300:
            log.error("OpenSearch refused the new fields' mappings on existing indices %s (%s): %s",
                      f"{family}_*", status, body)

    async def install_in_background(self, max_retry_seconds: float = 30.0) -> None:
        """At start-up: keep trying until OpenSearch answers, so the template is there early."""
        retry_seconds = 1.0
        while self._default not in self._settled:
            try:
                await self.ensure()
            except OpenSearchUnavailable as exc:
                log.warning("index template not installed yet (%s); retrying in %.0f s", exc, retry_seconds)
                await asyncio.sleep(retry_seconds)
                retry_seconds = min(max_retry_seconds, retry_seconds * 2)
