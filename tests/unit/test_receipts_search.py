"""receipts.Receipts over a mock OpenSearch transport (the seam of shipper/transport.py): one search by _id over
the caller's index family, owners and foreign indices filtered out, 503 when a shard did not answer, and
ACK_MODE=kafka's answers (no store, no book: indexed or unknown)."""

from __future__ import annotations

import json

import msgspec
import pytest

from event_collector.exceptions import OpenSearchUnavailable
from event_collector.receipts import Caller, Receipts
from event_collector.settings import load_settings
from event_collector.shipper.client import OpenSearchClient


class SearchTransport:
    def __init__(self, status: int, answer: dict) -> None:
        self.status, self.answer = status, answer
        self.requests: list[tuple[str, str, dict]] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        self.requests.append((method, url, json.loads(body or b"{}")))
        return self.status, msgspec.json.encode(self.answer)


def receipts_over(transport: SearchTransport) -> Receipts:
    settings = load_settings({"JWT_SECRET": "s" * 32, "SERVER_ENVIRONMENT": "prod"}, env_file=None)
    client = OpenSearchClient("http://opensearch:9200", 5, transport=transport)
    return Receipts(settings, client, None, None)


def hit(log_id: str, index: str, **source) -> dict:
    return {"_index": index, "_id": log_id, "_source": source}


async def test_one_search_by_id_over_the_callers_family_answers_its_own_documents_only():
    transport = SearchTransport(200, {"_shards": {"failed": 0}, "hits": {"hits": [
        hit("mine", "events_prod_2026-12", user_id="u1"),
        hit("theirs", "events_prod_2026-12", user_id="u2"),
        hit("by-a-source", "events_prod_2026-12", user_id="u1", source="prod"),
        hit("other-env", "events_prod_x_2026-12", user_id="u1"),  # environment "prod_x" matches events_prod_*
    ]}})
    ids = ["mine", "theirs", "by-a-source", "other-env", "never"]
    answer = await receipts_over(transport).answer(Caller(user_id="u1"), ids)
    assert answer == {"mine": {"state": "indexed", "index": "events_prod_2026-12"},
                      **{log_id: {"state": "unknown"} for log_id in ids[1:]}}
    [(method, url, body)] = transport.requests
    assert method == "POST" and url.startswith("http://opensearch:9200/events_prod_*/_search?ignore_unavailable=true")
    assert body["query"] == {"ids": {"values": ids}} and body["_source"] == ["user_id", "source"]


async def test_a_source_searches_its_own_prefix():
    transport = SearchTransport(200, {"hits": {"hits": [hit("m1", "events_shop_prod_2026-1", source="web")]}})
    answer = await receipts_over(transport).answer(Caller(source="web", index_prefix="events_shop"), ["m1"])
    assert answer == {"m1": {"state": "indexed", "index": "events_shop_prod_2026-1"}}
    assert "/events_shop_prod_*/_search" in transport.requests[0][1]


@pytest.mark.parametrize("status, answer", [
    (200, {"_shards": {"failed": 1}, "hits": {"hits": []}}),  # the shard that failed may hold the event
    (503, {"error": "all shards failed"}), (429, {"error": "too many requests"}), (200, "not an object"),
])
async def test_an_answer_that_cannot_be_trusted_is_unavailable(status, answer):
    with pytest.raises(OpenSearchUnavailable):
        await receipts_over(SearchTransport(status, answer)).answer(Caller(user_id="u1"), ["a"])
