"""The index template that maps every field of the collector's documents."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from ..exceptions import OpenSearchUnavailable
from ..retry import pause_reason
from .client import OpenSearchClient

log = logging.getLogger(__name__)

_KEYWORD = {"type": "keyword"}
_DATE = {"type": "date"}
# Bumped with every change of the mappings, so an operator can tell which one a cluster holds
# (GET _index_template/events_<environment>).
TEMPLATE_VERSION = 2


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
}


def template_name(environment: str) -> str:
    return f"events_{environment}"


def index_template(environment: str) -> dict[str, Any]:
    return {
        "index_patterns": [f"events_{environment}_*"],
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
                }
            }
        },
    }


async def install_template(client: OpenSearchClient, environment: str) -> tuple[int, Any]:
    body = msgspec.json.encode(index_template(environment))
    return await client.request("PUT", f"/_index_template/{template_name(environment)}", body)


async def add_new_fields(client: OpenSearchClient, environment: str) -> tuple[int, Any]:
    body = msgspec.json.encode({"properties": ADDED_FIELDS})
    return await client.request(
        "PUT", f"/events_{environment}_*/_mapping?allow_no_indices=true&ignore_unavailable=true", body)


class TemplateGuard:
    """Installs the template once OpenSearch answers, before the first bulk request creates an index.

    Shippers call `ensure` before every request; after one success it costs nothing. While OpenSearch
    cannot take it (unreachable, overloaded, or refusing the credentials) delivery waits. If OpenSearch
    refuses the template itself (another 4xx), the error is logged and shipping goes on: events are worth
    more than a mapping.
    """

    def __init__(self, client: OpenSearchClient, environment: str) -> None:
        self._client = client
        self._environment = environment
        self._settled = False
        self._lock = asyncio.Lock()

    async def ensure(self) -> None:
        """Raises OpenSearchUnavailable while OpenSearch cannot be reached."""
        if self._settled:
            return
        async with self._lock:
            if self._settled:
                return
            status, body = await install_template(self._client, self._environment)
            if 200 <= status < 300:
                log.info("index template %s installed", template_name(self._environment))
                await self._add_new_fields()
                self._settled = True
            elif (reason := pause_reason(status, body)) is not None:
                # Overloaded, down or misconfigured (401, 403, 404, a proxy's refusal): shipping now would
                # create indices without the mapping, so delivery waits for the template.
                raise OpenSearchUnavailable(f"installing the index template: {reason}")
            else:
                log.error("OpenSearch refused index template %s (%s): %s",
                          template_name(self._environment), status, body)
                self._settled = True

    async def _add_new_fields(self) -> None:
        """A template shapes only the indices created after it: an index of this month, created before an
        upgrade, gets the added fields' mappings here rather than mappings guessed from the first values."""
        status, body = await add_new_fields(self._client, self._environment)
        if (reason := pause_reason(status, body)) is not None:
            raise OpenSearchUnavailable(f"adding new fields to existing indices: {reason}")
        if not 200 <= status < 300:
            log.error("OpenSearch refused the new fields' mappings on existing indices %s (%s): %s",
                      f"events_{self._environment}_*", status, body)

    async def install_in_background(self, max_retry_seconds: float = 30.0) -> None:
        """At start-up: keep trying until OpenSearch answers, so the template is there early."""
        retry_seconds = 1.0
        while not self._settled:
            try:
                await self.ensure()
            except OpenSearchUnavailable as exc:
                log.warning("index template not installed yet (%s); retrying in %.0f s", exc, retry_seconds)
                await asyncio.sleep(retry_seconds)
                retry_seconds = min(max_retry_seconds, retry_seconds * 2)
