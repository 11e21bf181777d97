"""A family's own fields (a tracking plan's typed properties, docs/rules.md) in its template: installed with
it, and installed again, with the existing indices' mappings, when a new plan changes them; other families
are left alone. Over the shipper's mock transport (tests/unit/test_shipper.py)."""

from __future__ import annotations

import msgspec

from event_collector.shipper.client import OpenSearchClient
from event_collector.shipper.template import TemplateGuard
from test_shipper import MockTransport, answer_bulks, bulk_answer

PRICE = {"typed": {"properties": {"price": {"type": "double", "ignore_malformed": True}}}}
PRICE_AND_SKU = {"typed": {"properties": {**PRICE["typed"]["properties"], "sku": {"type": "keyword"}}}}


def puts(transport: MockTransport) -> list[tuple[str, dict]]:
    return [(r.url.split("9200")[1], msgspec.json.decode(r.body)) for r in transport.requests if r.method == "PUT"]


async def test_a_familys_own_fields_are_installed_and_installed_again_when_they_change():
    transport = MockTransport(answer_bulks(lambda r: bulk_answer(*[201] * len(r.bulk_ids))))
    guard = TemplateGuard(OpenSearchClient("http://node-a:9200", timeout_seconds=5, transport=transport), "test")
    guard.set_own_fields({"events_test": PRICE})
    indices = ["events_test_2026-12", "events_web_test_2026-12"]
    await guard.ensure(indices)
    first = puts(transport)
    template = dict(first)["/_index_template/events_test"]
    assert template["template"]["mappings"]["properties"]["typed"] == PRICE["typed"]
    assert "typed" not in dict(first)["/_index_template/events_web_test"]["template"]["mappings"]["properties"]
    await guard.ensure(indices)
    assert len(puts(transport)) == len(first)  # settled: nothing sent again

    guard.set_own_fields({"events_test": PRICE_AND_SKU})
    await guard.ensure(indices)
    again = puts(transport)[len(first):]
    assert [url.split("?")[0] for url, _ in again] == ["/_index_template/events_test", "/events_test_*/_mapping"]
    assert again[0][1]["template"]["mappings"]["properties"]["typed"] == PRICE_AND_SKU["typed"]
    assert again[1][1]["properties"]["typed"] == PRICE_AND_SKU["typed"]  # the month's index gets the new field


async def test_own_fields_changed_while_a_template_is_installed_are_installed_next():
    guard_box: list[TemplateGuard] = []

    def answer(request):
        if "_index_template" in request.url and not hasattr(answer, "changed"):
            answer.changed = True
            guard_box[0].set_own_fields({"events_test": PRICE})  # a new plan read while this PUT is under way
        return 200, {"acknowledged": True}

    transport = MockTransport(answer)
    guard = TemplateGuard(OpenSearchClient("http://node-a:9200", timeout_seconds=5, transport=transport), "test")
    guard_box.append(guard)
    await guard.ensure()
    await guard.ensure()
    templates = [body for url, body in puts(transport) if "_index_template" in url]
    assert len(templates) == 2 and templates[-1]["template"]["mappings"]["properties"]["typed"] == PRICE["typed"]
