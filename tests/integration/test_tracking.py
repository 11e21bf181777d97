"""The Segment tracking API against a real collector and OpenSearch, spoken by hand here (tests/integration/
test_sdks.py speaks it through the SDKs themselves): routes, write keys, documents, refusals, reloads."""

from __future__ import annotations

import base64
import gzip
import json
import signal
import time
import uuid

import pytest

from support import wait_until

KEY = "wk_web_" + "a" * 24
OTHER_KEY = "wk_ios_" + "b" * 24
ORIGIN = "https://shop.example.com"


def sources_file(tmp_path, text: str | None = None):
    path = tmp_path / "sources.yaml"
    path.write_text(text or f"""
sources:
  - name: web
    write_keys: [{KEY}]
    allowed_origins: ["{ORIGIN}"]
  - name: ios
    write_keys: [{OTHER_KEY}]
""")
    return path


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def message(kind: str = "track", **fields) -> dict:
    base = {"type": kind, "messageId": f"m-{uuid.uuid4()}", "userId": "u1",
            "timestamp": "2026-12-04T06:40:36.711Z", "sentAt": "2026-12-04T06:40:37.711Z"}
    if kind == "track":
        base |= {"event": "Order Completed", "properties": {"revenue": 9.5, "currency": "EUR"}}
    return base | fields


@pytest.fixture
def tracking(collector_factory, tmp_path):
    return collector_factory(SOURCES_FILE=str(sources_file(tmp_path)), JWT_SECRET="")


def source_environment(collector, source: str = "web") -> str:
    """What the OpenSearch helper takes for an environment: events_{source}_{environment}_* are the indices."""
    return f"{source}_{collector.environment}"


def test_each_type_is_kept_once_under_its_message_id_in_the_source_indices(tracking, opensearch):
    sent = [message("track"), message("identify", context={"traits": {"plan": "pro"}}),
            message("page", name="Home", properties={"path": "/"}), message("screen", name="Main"),
            message("group", groupId="g1", traits={"size": 10}), message("alias", previousId="anon-1")]
    for one in sent:
        response = tracking.http.post(f"/v1/{one['type']}", json=one, headers=basic(KEY))
        assert (response.status_code, response.json()) == (200, {"success": True}), response.text
    # A resend of the same messages (an SDK's retry) makes no second document.
    batch = tracking.http.post("/v1/batch", json={"batch": sent, "sentAt": "2026-12-04T06:40:38Z"}, headers=basic(KEY))
    assert batch.status_code == 200, batch.text
    environment = source_environment(tracking)
    wait_until(lambda: opensearch.count(environment) >= len(sent), timeout=60, message="the messages indexed")
    assert opensearch.log_id_counts(environment) == {m["messageId"]: 1 for m in sent}
    track = opensearch.indexed_document(environment, sent[0]["messageId"])
    assert track["type"] == "track" and track["source"] == "web" and track["user_id"] == "u1"
    assert track["event_info"]["event"] == "Order Completed"
    assert track["event_info"]["param"] == {"revenue": 9.5, "currency": "EUR"}
    assert track["message_id_generated"] is False
    # The event time: received_at − (sentAt − timestamp), a second before it was received.
    received = time.mktime(time.strptime(track["received_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    happened = time.mktime(time.strptime(track["event_time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 0 <= received - happened <= 2
    identify = opensearch.indexed_document(environment, sent[1]["messageId"])
    assert identify["traits"] == {"plan": "pro"}  # from context.traits, where rudder-sdk-python puts them
    assert opensearch.indexed_document(environment, sent[4]["messageId"])["traits"] == {"size": 10}
    alias = opensearch.indexed_document(environment, sent[5]["messageId"])
    assert alias["previous_id"] == "anon-1"


def test_the_write_key_may_come_in_the_body_as_text_plain_as_analytics_next_sends_it(tracking, opensearch):
    one = message("track", writeKey=KEY)
    response = tracking.http.post("/v1/t", content=json.dumps(one), headers={"Content-Type": "text/plain"})
    assert response.status_code == 200, response.text
    assert opensearch.indexed_document(source_environment(tracking), one["messageId"])["type"] == "track"


def test_a_gzip_batch_with_a_bad_message_keeps_the_others(tracking, opensearch):
    good, bad_type, no_user = message(), message("purchase"), message(userId=None)
    body = gzip.compress(json.dumps({"batch": [good, bad_type, no_user]}).encode())
    response = tracking.http.post("/v1/batch", content=body,
                                  headers={**basic(KEY), "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert [(r["index"], r.get("field")) for r in response.json()["rejected"]] == [(1, "type"), (2, "userId")]
    assert opensearch.indexed_document(source_environment(tracking), good["messageId"])["source"] == "web"


@pytest.mark.parametrize("headers", [basic("wk_unknown_" + "c" * 20), {}, {"Authorization": "Basic !!!"}])
def test_a_wrong_or_missing_key_is_401_and_nothing_is_kept(tracking, headers):
    response = tracking.http.post("/v1/track", json=message(), headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized" and "write key" in response.json()["error"]


def test_oversized_messages_and_batches_are_refused(tracking):
    big = message(properties={"blob": "x" * 33_000})
    assert tracking.http.post("/v1/track", json=big, headers=basic(KEY)).status_code == 413
    many = {"batch": [message(properties={"blob": "x" * 20_000}) for _ in range(30)]}
    assert tracking.http.post("/v1/batch", json=many, headers=basic(KEY)).status_code == 413
    response = tracking.http.post("/v1/batch", json={"batch": [big, message()]}, headers=basic(KEY))
    assert response.status_code == 200 and [r["index"] for r in response.json()["rejected"]] == [0]


def test_properties_opensearch_would_refuse_are_400_naming_the_path(tracking):
    deep: dict = {}
    node = deep
    for _ in range(25):
        node["next"] = {}
        node = node["next"]
    response = tracking.http.post("/v1/track", json=message(properties=deep), headers=basic(KEY))
    assert response.status_code == 400 and response.json()["field"] == "properties"


def test_a_browser_of_an_origin_the_source_does_not_allow_is_refused_and_nothing_is_kept(tracking, opensearch):
    one = message()
    refused = tracking.http.post("/v1/track", json=one, headers={**basic(KEY), "Origin": "https://evil.example"})
    assert refused.status_code == 403 and refused.json()["code"] == "origin_not_allowed"
    later = message()
    allowed = tracking.http.post("/v1/track", json=later, headers={**basic(KEY), "Origin": ORIGIN})
    assert allowed.status_code == 200
    # Kept in order: once the later message is searchable, the refused one would be too, had it been kept.
    opensearch.indexed_document(source_environment(tracking), later["messageId"])
    assert one["messageId"] not in opensearch.log_id_counts(source_environment(tracking))
    # The ios source names no origin: no browser page may send with its key.
    assert tracking.http.post("/v1/track", json=message(), headers={**basic(OTHER_KEY), "Origin": ORIGIN}
                              ).status_code == 403


def test_a_key_removed_from_the_file_is_refused_once_it_is_read_again_and_a_bad_file_changes_nothing(
        tracking, tmp_path):
    path = tmp_path / "sources.yaml"
    path.write_text(f"sources: [{{name: web, write_keys: [{OTHER_KEY}]}}]")
    wait_until(lambda: tracking.http.post("/v1/track", json=message(), headers=basic(KEY)).status_code == 401,
               timeout=10, message="the removed key refused")
    path.write_text("sources: [{name: Web}]")
    wait_until(lambda: "stay in force" in tracking.log(), timeout=10, message="the bad file refused")
    assert tracking.http.post("/v1/track", json=message(), headers=basic(OTHER_KEY)).status_code == 200


def test_a_browser_of_an_allowed_origin_passes_the_preflight_and_reads_retry_after(tracking):
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,x-retry-count"}
    allowed = tracking.http.options("/v1/t", headers=preflight)
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-retry-count" in allowed.headers["access-control-allow-headers"]
    assert tracking.http.options("/v1/t", headers={**preflight, "Origin": "https://evil.example"}).status_code == 403
    answered = tracking.http.post("/v1/t", json=message(), headers={**basic(KEY), "Origin": ORIGIN})
    assert answered.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in answered.headers["access-control-expose-headers"]


def test_a_message_without_a_message_id_gets_one_and_is_flagged(tracking, opensearch):
    one = message(userId="u-no-id", event="No Id")
    del one["messageId"]
    assert tracking.http.post("/v1/track", json=one, headers=basic(KEY)).status_code == 200
    [hit] = wait_until(lambda: opensearch.search(source_environment(tracking), {"term": {"user_id": "u-no-id"}}),
                       timeout=30, message="the message indexed")
    assert hit["_source"]["message_id_generated"] is True and hit["_id"] == hit["_source"]["log_id"]


def test_the_jwt_api_works_beside_the_sources_unchanged(collector_factory, tmp_path, opensearch):
    both = collector_factory(SOURCES_FILE=str(sources_file(tmp_path)))
    assert both.post_event({"log_id": "jwt-1", "page": "/", "event": "click"}).status_code == 200
    assert opensearch.indexed_document(both.environment, "jwt-1").get("type") is None
    assert both.http.post("/v1/track", json=message(), headers=basic(KEY)).status_code == 200


def test_sighup_reads_the_file_again_and_the_process_goes_on_serving(tracking):
    tracking.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "read: 2 sources" in tracking.log(), timeout=10, message="the file read again on SIGHUP")
    assert tracking.http.post("/v1/track", json=message(), headers=basic(KEY)).status_code == 200


def test_a_source_over_its_rate_gets_429_and_a_batch_keeps_what_the_rate_allows(collector_factory, tmp_path):
    path = sources_file(tmp_path, f"sources: [{{name: slow, write_keys: [{KEY}], rate_limit: 1}}]")
    limited = collector_factory(SOURCES_FILE=str(path))
    response = limited.http.post("/v1/batch", json={"batch": [message() for _ in range(3)]}, headers=basic(KEY))
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], [r["status"] for r in response.json()["rejected"]]) == (1, [429, 429])
    refused = limited.http.post("/v1/track", json=message(), headers=basic(KEY))
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1


@pytest.mark.parametrize("mode", ["memory"])
def test_the_tracking_api_keeps_messages_in_the_other_ack_modes_too(collector_factory, tmp_path, opensearch, mode):
    other = collector_factory(SOURCES_FILE=str(sources_file(tmp_path)), ACK_MODE=mode)
    one = message()
    assert other.http.post("/v1/track", json=one, headers=basic(KEY)).status_code == 200
    assert opensearch.indexed_document(source_environment(other), one["messageId"])["source"] == "web"
