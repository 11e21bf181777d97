"""Tracking plans (RULES_FILE, docs/rules.md) against real collector processes and the real OpenSearch node:
each policy, typed properties summed by OpenSearch, conflicting plans refused with the last good kept, a reload
under load, PII hashing, bots, sampling, the tracking API's sources, and `event-collector rules check`."""

from __future__ import annotations

import base64
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from support import (CollectorProcess, Load, OpenSearch, assert_delivered_exactly_once, event, metric,
                     wait_until)

HASH_KEY = "rules-hash-key-" + "k" * 32
WRITE_KEY = "wk_shop_" + "c" * 24
EMAIL = "jane.doe@shop.example"
PLAN = """
version: {label}
sources:
  events:
    unplanned: {unplanned}
    bots: flag
    pii: {{email: hash}}
    events:
      purchase:
        policy: reject
        properties:
          type: object
          required: [price, currency]
          properties:
            price: {{type: {price_type}}}
            quantity: {{type: integer, minimum: 1}}
            currency: {{type: string, enum: [EUR, USD]}}
            email: {{type: string, format: email}}
      added_to_cart:
        policy: quarantine
        properties: {{type: object, required: [sku], properties: {{sku: {{type: string}}}}}}
      product_viewed:
        policy: tag
        sample: 0.5
        properties: {{type: object, properties: {{sku: {{type: string}}}}}}
      search_performed:
        policy: tag
        properties: {{type: object, properties: {{query: {{type: string}}, results: {{type: integer}}}}}}
      heartbeat:
        drop: true
  shop-web:
    unplanned: reject
    pii: {{email: hash}}
    events:
      Order Completed:
        policy: reject
        properties: {{type: object, required: [revenue], properties: {{revenue: {{type: number}}}}}}
      identify:
        policy: tag
"""


def plan(label: str = "shop-1", unplanned: str = "tag", price_type: str = "number") -> str:
    return PLAN.format(label=label, unplanned=unplanned, price_type=price_type)


def start(tmp_path: Path, text: str, **settings) -> tuple[CollectorProcess, Path]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(text)
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources: [{{name: shop-web, write_keys: [{WRITE_KEY}]}}]")
    collector = CollectorProcess(tmp_path, RULES_FILE=rules, RULES_HASH_KEY=HASH_KEY, SOURCES_FILE=sources,
                                 **settings).start()
    return collector, rules


@pytest.fixture(scope="module")
def shop(tmp_path_factory, opensearch):
    collector, _ = start(tmp_path_factory.mktemp("shop"), plan())
    yield collector
    collector.stop()


def purchase(price=9.5, **param) -> dict:
    return event(event="purchase", param={"price": price, "currency": "EUR", **param})


def rules_counted(collector, outcome: str, event_name: str, rule: str, source: str = "events") -> float:
    return metric(collector, "event_collector_rules_events_total", outcome=outcome, source=source,
                  event=event_name, rule=rule)


def search(opensearch: OpenSearch, pattern: str, query: dict, **body) -> dict:
    opensearch.http.post(f"/{pattern}/_refresh", params={"allow_no_indices": "true"})
    response = opensearch.http.post(f"/{pattern}/_search", json={"query": query, **body},
                                    params={"allow_no_indices": "true", "ignore_unavailable": "true"})
    response.raise_for_status()
    return response.json()


def version_of(collector) -> str:
    return collector.http.get("/readyz").json()["rules"]["version"]


def test_reject_answers_400_naming_the_event_the_path_and_the_rule(shop, opensearch):
    before = rules_counted(shop, "rejected", "purchase", "type")
    fast_answers = metric(shop, "event_collector_fast_path_answers_total")
    bad = purchase(price="9.50")
    response = shop.post_event(bad)
    assert response.status_code == 400
    assert metric(shop, "event_collector_fast_path_answers_total") == fast_answers + 1  # the fast path judged it
    body = response.json()
    assert body["field"] == "param.price"
    assert "'purchase'" in body["error"] and "param.price" in body["error"] and "(rule type)" in body["error"]
    assert rules_counted(shop, "rejected", "purchase", "type") == before + 1
    good = purchase()
    assert shop.post_event(good).status_code == 200
    document = opensearch.indexed_document(shop.environment, good["log_id"])
    assert document["rules_version"] == version_of(shop) and "violations" not in document
    assert not opensearch.search(shop.environment, {"term": {"log_id": bad["log_id"]}})


def test_a_batch_keeps_its_valid_events_and_rejects_the_bad_one_by_position(shop, opensearch):
    sent = [purchase(), purchase(currency="JPY"), purchase()]
    response = shop.http.post("/events/batch", json=sent, headers=shop.auth())
    assert response.status_code == 200
    assert response.json()["accepted"] == 2
    [rejected] = response.json()["rejected"]
    assert (rejected["index"], rejected["status"], rejected["field"]) == (1, 400, "param.currency")
    for kept in (sent[0], sent[2]):
        opensearch.indexed_document(shop.environment, kept["log_id"])
    assert not opensearch.search(shop.environment, {"term": {"log_id": sent[1]["log_id"]}})


def test_quarantine_answers_2xx_and_keeps_the_event_apart_with_its_violations(shop, opensearch):
    quarantined = event(event="added_to_cart", param={"quantity": 1})
    assert shop.post_event(quarantined).status_code == 200
    pattern = f"quarantine_events_{shop.environment}_*"
    hits = wait_until(lambda: search(opensearch, pattern, {"term": {"log_id": quarantined["log_id"]}})["hits"]["hits"],
                      timeout=30, message="the quarantined event indexed")
    assert hits[0]["_source"]["violations"] == ["param.sku: required"]
    assert not opensearch.search(shop.environment, {"term": {"log_id": quarantined["log_id"]}})
    assert rules_counted(shop, "quarantined", "added_to_cart", "required") >= 1


def test_tag_and_unplanned_tag_index_the_event_with_its_violations(shop, opensearch):
    tagged = event(event="search_performed", param={"query": 42, "results": 3})
    unplanned = event(event="wishlist_opened")
    for sent in (tagged, unplanned):
        assert shop.post_event(sent).status_code == 200
    document = opensearch.indexed_document(shop.environment, tagged["log_id"])
    assert document["violations"] == ["param.query: type"]
    assert document["typed"] == {"results": 3}  # the sound value is copied, the broken one is not
    assert opensearch.indexed_document(shop.environment, unplanned["log_id"])["violations"] == ["event: unplanned"]
    assert rules_counted(shop, "tagged", "(unplanned)", "unplanned") >= 1


def test_typed_properties_are_summed_by_an_opensearch_aggregation(shop, opensearch):
    buyer = f"buyer-{uuid.uuid4().hex[:8]}"
    prices = [9.5, 20.25, 0.25, 100.0]
    sent = [purchase(price, quantity=2) for price in prices]
    for one in sent:
        assert shop.http.post("/events", json=one, headers=shop.auth(buyer)).status_code == 200
    for one in sent:
        opensearch.indexed_document(shop.environment, one["log_id"])
    result = search(opensearch, f"events_{shop.environment}_*", {"term": {"user_id": buyer}}, size=0,
                    aggs={"revenue": {"sum": {"field": "typed.price"}}, "items": {"sum": {"field": "typed.quantity"}},
                          "big": {"filter": {"range": {"typed.price": {"gte": 20}}}}})
    assert result["aggregations"]["revenue"]["value"] == pytest.approx(sum(prices))
    assert result["aggregations"]["items"]["value"] == 2 * len(prices)
    assert result["aggregations"]["big"]["doc_count"] == 2
    mapping = opensearch.http.get(f"/events_{shop.environment}_*/_mapping/field/typed.*").json()
    types = {name: field["mapping"][name.split(".")[-1]]["type"]
             for index in mapping.values() for name, field in index["mappings"].items()}
    assert types["typed.price"] == "double" and types["typed.quantity"] == "long"
    assert types["typed.currency"] == "keyword"


def test_a_hashed_email_is_equal_across_events_and_never_in_clear_in_the_index_or_the_log(shop, opensearch):
    sent = [purchase(email=EMAIL), purchase(email=EMAIL), purchase(email="someone.else@shop.example")]
    for one in sent:
        assert shop.post_event(one).status_code == 200
    hashed = [opensearch.indexed_document(shop.environment, one["log_id"])["event_info"]["param"]["email"]
              for one in sent]
    assert hashed[0] == hashed[1] != hashed[2]
    assert EMAIL not in hashed[0] and len(hashed[0]) == 64
    anywhere = search(opensearch, f"*{shop.environment}*", {"query_string": {"query": f'"{EMAIL}"'}})
    assert anywhere["hits"]["total"]["value"] == 0
    raw = opensearch.http.get(f"/events_{shop.environment}_*/_search", params={"q": "jane.doe"}).json()
    assert raw["hits"]["total"]["value"] == 0
    assert EMAIL not in shop.log()


def test_a_bot_user_agent_is_flagged(shop, opensearch):
    crawler, person = event(event="purchase", param={"price": 1, "currency": "USD"}), purchase()
    agent = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    assert shop.post_event(crawler, {"user-agent": agent}).status_code == 200
    assert shop.post_event(person, {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0"}).status_code == 200
    assert opensearch.indexed_document(shop.environment, crawler["log_id"])["bot"] is True
    assert "bot" not in opensearch.indexed_document(shop.environment, person["log_id"])


def test_sampling_keeps_the_same_decision_across_a_resend(shop, opensearch):
    sent = [event(event="product_viewed", param={"sku": "A"}) for _ in range(60)]
    for _ in range(2):  # the resend: the same log_ids
        for one in sent:
            assert shop.post_event(one).status_code == 200
    assert shop.post_event(kept := purchase()).status_code == 200
    opensearch.indexed_document(shop.environment, kept["log_id"])  # what came before is indexed too
    ids = {one["log_id"] for one in sent}
    counts = {log_id: n for log_id, n in opensearch.log_id_counts(shop.environment).items() if log_id in ids}
    assert all(n == 1 for n in counts.values())
    assert 10 <= len(counts) <= 50, len(counts)  # about half
    assert rules_counted(shop, "sampled_out", "product_viewed", "sample") >= 2 * (60 - len(counts))


def test_a_dropped_event_is_answered_2xx_counted_and_never_indexed(shop, opensearch):
    dropped = event(event="heartbeat")
    before = rules_counted(shop, "dropped", "heartbeat", "drop")
    created = metric(shop, "event_collector_events_received_total", outcome="created")
    assert shop.post_event(dropped).status_code == 200
    assert metric(shop, "event_collector_events_received_total", outcome="created") == created  # nothing kept
    batch = shop.http.post("/events/batch", json=[event(event="heartbeat"), purchase()], headers=shop.auth())
    assert batch.json() == {"status": "created", "accepted": 2, "rejected": []}
    assert rules_counted(shop, "dropped", "heartbeat", "drop") == before + 2
    assert not opensearch.search(shop.environment, {"term": {"event_info.event": "heartbeat"}})


def test_a_tracking_source_has_its_own_plan(shop, opensearch):
    auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
    good = {"type": "track", "event": "Order Completed", "messageId": uuid.uuid4().hex, "userId": "u1",
            "properties": {"revenue": 12.5, "email": EMAIL}}
    bad = {**good, "messageId": uuid.uuid4().hex, "properties": {"revenue": "12.5"}}
    unplanned = {**good, "messageId": uuid.uuid4().hex, "event": "Coupon Entered"}
    identify = {"type": "identify", "messageId": uuid.uuid4().hex, "userId": "u1", "traits": {"email": EMAIL}}
    response = shop.http.post("/v1/batch", json={"batch": [good, bad, unplanned, identify]}, headers=auth)
    assert response.status_code == 200, response.text
    assert [(r["index"], r["field"]) for r in response.json()["rejected"]] == [(1, "properties.revenue"), (2, "event")]
    single = shop.http.post("/v1/track", json={**bad, "messageId": uuid.uuid4().hex}, headers=auth)
    assert single.status_code == 400 and single.json()["field"] == "properties.revenue"
    environment = f"shop-web_{shop.environment}"
    document = opensearch.indexed_document(environment, good["messageId"])
    assert document["typed"] == {"revenue": 12.5} and document["event_info"]["param"]["email"] != EMAIL
    assert opensearch.indexed_document(environment, identify["messageId"])["traits"]["email"] != EMAIL


def test_a_plan_typing_a_field_apart_from_a_live_index_is_refused_and_the_last_good_stays(tmp_path, opensearch):
    collector, rules = start(tmp_path, plan("first"))
    try:
        first = version_of(collector)
        seeded = purchase(price=5)
        assert collector.post_event(seeded).status_code == 200
        opensearch.indexed_document(collector.environment, seeded["log_id"])  # the index maps typed.price double
        rules.write_text(plan("second", price_type="string"))
        collector.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "conflicts with the typed fields in force" in collector.log(), timeout=15,
                   message="the conflicting plan refused")
        assert "typed.price is mapped as double" in collector.log() and "the plan makes it keyword" in collector.log()
        assert version_of(collector) == first
        assert collector.post_event(purchase(price="5")).status_code == 400  # judged by the first plan still
        # The other kind: two events of one source typing a property apart, refused as it is read.
        rules.write_text(plan("third").replace("sku: {type: string}}}, required", "sku: {type: integer}}}, required")
                         .replace("properties: {type: object, properties: {sku: {type: string}}}",
                                  "properties: {type: object, properties: {sku: {type: integer}}}"))
        wait_until(lambda: "types it as" in collector.log(), timeout=15, message="the file change noticed")
        assert version_of(collector) == first
        rules.write_text(plan("fourth"))
        wait_until(lambda: version_of(collector).startswith("fourth-"), timeout=15, message="a good plan taken")
    finally:
        collector.stop()
    # At start-up a plan conflicting with the live indices stops the collector, naming the field.
    (tmp_path / "conflicting.yaml").write_text(plan("fifth", price_type="string"))
    refused = CollectorProcess(tmp_path, SERVER_ENVIRONMENT=collector.environment, RULES_HASH_KEY=HASH_KEY,
                               RULES_FILE=tmp_path / "conflicting.yaml")
    with pytest.raises(AssertionError, match="collector exited"):
        refused.start()
    assert "typed.price is mapped as double" in refused.log()
    refused.http.close()


def test_a_reload_under_load_loses_and_duplicates_nothing(tmp_path, opensearch):
    collector, rules = start(tmp_path, plan("before", unplanned="allow"))
    try:
        with Load(collector, clients=4) as load:
            wait_until(lambda: len(load.accepted) > 300, timeout=60, message="load under way")
            rules.write_text(plan("after", unplanned="tag"))
            collector.process.send_signal(signal.SIGHUP)
            wait_until(lambda: version_of(collector).startswith("after-"), timeout=15, message="the new plan in force")
            at_reload = len(load.accepted)
            wait_until(lambda: len(load.accepted) > at_reload + 300, timeout=60, message="load after the reload")
        assert load.count(200) == load.sent, load.statuses  # no refused or dropped request
        counts = assert_delivered_exactly_once("rules reload under load", load, opensearch, collector.environment,
                                               fault="config_reload", ack_mode="durable",
                                               settings={**collector.report_settings(),
                                                         "RULES_FILE": "a plan, rewritten, SIGHUP"})
        versions = search(opensearch, f"events_{collector.environment}_*", {"match_all": {}}, size=0,
                          aggs={"v": {"terms": {"field": "rules_version"}}})["aggregations"]["v"]["buckets"]
        by_version = {bucket["key"].split("-")[0]: bucket["doc_count"] for bucket in versions}
        assert set(by_version) == {"before", "after"} and sum(by_version.values()) == len(counts)
    finally:
        collector.stop()


def test_rules_check_holds_a_file_against_the_live_node(shop, opensearch, tmp_path):
    assert shop.post_event(seeded := purchase()).status_code == 200
    opensearch.indexed_document(shop.environment, seeded["log_id"])
    good, conflicting, broken = tmp_path / "good.yaml", tmp_path / "conflict.yaml", tmp_path / "broken.yaml"
    good.write_text(plan("next"))
    conflicting.write_text(plan("next", price_type="string"))
    broken.write_text(plan("next").replace("policy: quarantine", "policy: later"))

    def check(path: Path, *options: str) -> subprocess.CompletedProcess:
        environment = {**shop.env, "SERVER_ENVIRONMENT": shop.environment}
        return subprocess.run([sys.executable, "-m", "event_collector.cli", "rules", "check", str(path), *options],
                              env=environment, capture_output=True, text=True, timeout=60)

    url = ["--opensearch", opensearch.url]
    assert check(good, *url).returncode == 0
    refused = check(conflicting, *url)
    assert refused.returncode == 1
    assert "typed.price is mapped as double" in refused.stderr and "the plan makes it keyword" in refused.stderr
    assert check(conflicting).returncode == 0  # the file alone is sound
    invalid = check(broken)
    assert invalid.returncode == 1 and "sources.events.events.added_to_cart.policy: 'later'" in invalid.stderr
    assert httpx.get(shop.url + "/metrics").text.count(f'event_collector_rules_info{{version="{version_of(shop)}"}} 1')


def test_each_worker_reads_a_changed_file_on_its_own(tmp_path, opensearch):
    collector, rules = start(tmp_path, plan("first"), SERVER_WORKERS=2)
    try:
        def versions_by_worker() -> dict[int, str]:
            seen = {}
            for _ in range(40):  # a connection each: the kernel spreads them over the workers
                report = httpx.get(collector.url + "/readyz", timeout=10).json()
                seen[report["pid"]] = report["rules"]["version"]
            return seen

        wait_until(lambda: len(versions_by_worker()) == 2, timeout=30, message="both workers answer")
        rules.write_text(plan("second"))

        def all_second() -> bool:
            seen = versions_by_worker()
            return len(seen) == 2 and all(version.startswith("second-") for version in seen.values())

        wait_until(all_second, timeout=30, message="both workers on the new plan")
        assert collector.post_event(purchase(price="1")).status_code == 400
    finally:
        collector.stop()
