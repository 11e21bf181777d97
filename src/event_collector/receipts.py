"""Receipts: what became of events a caller sent, by log_id (POST /v1/receipts, docs/receipts.md).

One receipts request costs one OpenSearch search by `_id` over the caller's index family, one read of the
pending store (pending rows and dead letters in one snapshot) and dict lookups in this process's book of
events in flight (in_flight.py). The answer for each id is the first that applies of: indexed,
dead_lettered, pending, in_flight, unknown. Everything is checked against the caller: an event is answered
only to the one that sent it, and to anyone else it is `unknown`, like an event never sent.

The book is read before the store and OpenSearch are asked: an event that leaves the book meanwhile is
already in the store or delivered by then, so it is never missed by all three.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from .envelope import DocumentOwner, document_owner, format_timestamp
from .exceptions import ConfigError, OpenSearchUnavailable
from .in_flight import InFlightBook
from .pending import PendingStore
from .pending.lookup import StoredReceipts
from .settings import Settings
from .shipper.client import OpenSearchClient

log = logging.getLogger(__name__)

UNKNOWN = {"state": "unknown"}
_SEARCH_PARAMETERS = "ignore_unavailable=true&allow_no_indices=true&filter_path=_shards.failed,hits.hits._index,"\
                     "hits.hits._id,hits.hits._source"


@dataclass(frozen=True)
class Caller:
    """Who asks: a JWT API user (its token's `sub`) or a tracking API source (its write key's)."""

    user_id: str | None = None
    source: str | None = None
    # The source's index prefix (sources.Source.prefix); the JWT API's indices start with "events".
    index_prefix: str = "events"

    def owns(self, owner: DocumentOwner) -> bool:
        if self.source is not None:
            return owner.source == self.source
        return owner.source is None and owner.user_id == self.user_id

    @property
    def key(self) -> str:
        """The caller's name for its rate limit: users and sources never share a bucket."""
        return f"source:{self.source}" if self.source is not None else f"user:{self.user_id}"


class Receipts:
    """Answers receipts from a collector: `book` and `store` are None in ACK_MODE=kafka, where this process
    keeps nothing and only OpenSearch can answer (indexed or unknown)."""

    def __init__(self, settings: Settings, client: OpenSearchClient | None, store: PendingStore | None,
                 book: InFlightBook | None) -> None:
        self._settings = settings
        self._environment = settings.server_environment
        self._client = client
        # Without a collector's client (kafka mode) a small one of its own, made at the first receipts request:
        # a collector that only hands events to Kafka must start whatever its OpenSearch settings say.
        self._own_client: OpenSearchClient | None = None
        self._opening = asyncio.Lock()
        self._store = store
        self._book = book

    async def close(self) -> None:
        if self._own_client is not None:
            await self._own_client.close()

    async def answer(self, caller: Caller, log_ids: list[str]) -> dict[str, dict[str, Any]]:
        """A receipt per id. Raises OpenSearchUnavailable or StoreError when either cannot be asked."""
        remembered = {}
        if self._book is not None:
            for log_id in log_ids:
                found = self._book.look_up(log_id)
                if found is not None and caller.owns(document_owner(found[1].document)):
                    remembered[log_id] = found
        if self._store is not None:
            # Both asked at once; both must answer (return_exceptions: neither is left running unawaited).
            stored, indexed = await asyncio.gather(self._store.receipts(log_ids), self._search(caller, log_ids),
                                                   return_exceptions=True)
            for result in (stored, indexed):
                if isinstance(result, BaseException):
                    raise result
        else:
            stored, indexed = StoredReceipts({}, {}), await self._search(caller, log_ids)
        return {log_id: _receipt(log_id, caller, indexed, stored, remembered) for log_id in log_ids}

    async def _search(self, caller: Caller, log_ids: list[str]) -> dict[str, str]:
        """log_id -> index, for the caller's documents among them: one search by _id over its index family."""
        pattern = f"{caller.index_prefix}_{self._environment}_*"
        body = msgspec.json.encode({
            "query": {"ids": {"values": log_ids}}, "_source": ["user_id", "source"],
            # A document has one _id per index; room for one copy in a second index besides.
            "size": 2 * len(log_ids), "track_total_hits": False})
        client = self._client or await self._opened_own_client()
        status, answer = await client.request("POST", f"/{pattern}/_search?{_SEARCH_PARAMETERS}", body)
        if status != 200 or not isinstance(answer, dict):
            raise OpenSearchUnavailable(f"OpenSearch answered a receipts search with {status}: {str(answer)[:300]}")
        if answer.get("_shards", {}).get("failed"):
            # A shard that did not answer may hold the event: "unknown" would be a wrong answer.
            raise OpenSearchUnavailable(f"{answer['_shards']['failed']} shards failed a receipts search")
        # The family's own indices only: {prefix}_{environment}_{YYYY}-{M}, not another environment's that the
        # wildcard also matches (environment "a" and "a_b").
        own_index = re.compile(rf"{re.escape(caller.index_prefix)}_{re.escape(self._environment)}_\d{{4}}-\d{{1,2}}")
        found = {}
        for hit in answer.get("hits", {}).get("hits", []):
            source = hit.get("_source") or {}
            owner = DocumentOwner(_text(source.get("user_id")), _text(source.get("source")))
            if own_index.fullmatch(hit.get("_index", "")) and caller.owns(owner):
                found[hit["_id"]] = hit["_index"]
        return found

    async def _opened_own_client(self) -> OpenSearchClient:
        async with self._opening:  # the first requests may come together: one client for all
            if self._own_client is None:
                try:
                    client = OpenSearchClient.from_settings(self._settings, max_connections=4)
                except ConfigError as exc:
                    raise OpenSearchUnavailable(f"OpenSearch cannot be asked: {exc}") from exc
                await client.open()
                self._own_client = client
        return self._own_client


def _receipt(log_id: str, caller: Caller, indexed: dict[str, str], stored: StoredReceipts,
             remembered: dict[str, tuple]) -> dict[str, Any]:
    book_state, envelope = remembered.get(log_id, (None, None))
    if log_id in indexed:
        return {"state": "indexed", "index": indexed[log_id]}
    if book_state == "indexed":
        return {"state": "indexed", "index": envelope.index}
    letter = stored.dead_letters.get(log_id)
    if letter is not None and caller.owns(letter.owner):
        return {"state": "dead_lettered", "reason": letter.reason, "failed_at": format_timestamp(letter.failed_at)}
    row = stored.pending.get(log_id)
    if row is not None and caller.owns(row.owner):
        return {"state": "pending", "attempts": row.attempts, "next_attempt_at": format_timestamp(row.next_attempt_at),
                "last_error": row.last_error}
    if book_state == "in_flight":
        return {"state": "in_flight", "accepted_at": format_timestamp(envelope.received_at)}
    return UNKNOWN


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
