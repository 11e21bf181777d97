"""POST /v1/receipts refuses what it cannot answer, precisely and cheaply, and keeps serving: bad bodies (400),
credentials (401), size (413, declared, sent or inflated), its per-caller rate (429), hostile JSON."""

from __future__ import annotations

import gzip
import json
import socket
import uuid

import pytest

from support import CollectorProcess, event, metric, wait_until

KEY = "wk_web_" + "a" * 24


@pytest.fixture(scope="module")
def served(tmp_path_factory, opensearch):
    directory = tmp_path_factory.mktemp("receipts")
    sources = directory / "sources.yaml"
    sources.write_text(f"sources:\n  - name: web\n    write_keys: [{KEY}]\n")
    collector = CollectorProcess(directory, RECEIPTS_RATE_LIMIT=2, SOURCES_FILE=str(sources)).start()
    yield collector
    collector.stop()


def ask(collector: CollectorProcess, content: bytes, headers: dict[str, str] | None = None):
    # A caller of its own per request: the rate limit (2 a second, burst 4) stays out of these tests' way.
    auth = collector.auth(f"caller-{uuid.uuid4().hex}")
    return collector.http.post("/v1/receipts", content=content,
                               headers={**auth, "Content-Type": "application/json", **(headers or {})})


def still_serving(collector: CollectorProcess) -> None:
    assert collector.http.get("/ping").text == "pong"
    one = event()
    assert collector.post_event(one).status_code == 200
    response = ask(collector, json.dumps({"ids": [one["log_id"]]}).encode())
    assert response.status_code in (200, 503), response.text


@pytest.mark.parametrize("body, field", [
    (b"", None), (b"{", None), (b"[]", "ids"), (b"{}", "ids"), (b'{"ids": "x"}', "ids"), (b'{"ids": []}', "ids"),
    (b'{"ids": [1]}', "ids"), (b'{"ids": [null]}', "ids"), (b'{"ids": [""]}', "ids"),
    (b'{"ids": ["a", "a"]}', "ids"), (json.dumps({"ids": ["x" * 513]}).encode(), "ids"),
    (json.dumps({"ids": [f"e{n}" for n in range(1001)]}).encode(), "ids"), (b'{"ids": ["\xff"]}', None),
])
def test_a_body_that_is_not_one_to_a_thousand_distinct_ids_is_400(served, body, field):
    response = ask(served, body)
    assert response.status_code == 400, response.text
    assert response.json().get("field") == field, response.json()


def test_a_thousand_ids_are_answered_each(served):
    ids = [f"never-sent-{n}" for n in range(1000)]
    response = wait_until(lambda: (r := ask(served, json.dumps({"ids": ids}).encode())).status_code != 503 and r,
                          timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["receipts"] == {log_id: {"state": "unknown"} for log_id in ids}


@pytest.mark.parametrize("authorization", [
    None, "Bearer not.a.token", "Digest abc", "Basic " + "d2tfdW5rbm93bl9jY2NjY2NjY2NjY2NjY2NjY2NjYzo=", "Basic !!!",
])
def test_no_or_bad_credentials_are_401(served, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = served.http.post("/v1/receipts", json={"ids": ["x"]}, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] and "www-authenticate" in response.headers


def test_bodies_over_64_kb_are_413_declared_sent_or_inflated(served):
    big = json.dumps({"ids": [f"{n:0>100}" for n in range(700)]}).encode()
    assert len(big) > 64 * 1024
    assert ask(served, big).status_code == 413
    # Sent in chunks, without a Content-Length.
    assert served.http.post("/v1/receipts", content=iter([big[:40_000], big[40_000:]]),
                            headers=served.auth("chunked")).status_code == 413
    bomb = gzip.compress(b'{"ids": ["' + b"a" * 10_000_000 + b'"]}')
    assert len(bomb) < 64 * 1024
    assert ask(served, bomb, {"Content-Encoding": "gzip"}).status_code == 413
    assert ask(served, b"{}", {"Content-Encoding": "br"}).status_code == 415
    still_serving(served)


def test_a_caller_past_its_rate_is_429_with_retry_after_and_others_go_on(served):
    body = json.dumps({"ids": ["x"]}).encode()
    headers = {**served.auth("greedy"), "Content-Type": "application/json"}
    statuses = [served.http.post("/v1/receipts", content=body, headers=headers) for _ in range(8)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert "RECEIPTS_RATE_LIMIT" in limited[0].json()["error"]
    # Another caller (a user or a source) is not held back by the greedy one.
    assert ask(served, body).status_code != 429
    assert metric(served, "event_collector_receipts_requests_total", outcome="rate_limited") >= 1


def test_hostile_json_is_refused_and_the_collector_keeps_serving(served):
    hostile = [
        b'{"ids": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",            # deeper than msgspec's recursion
        b'{"skip": ' + b"[" * 20_000 + b"]" * 20_000 + b', "ids": ["x"]}',  # the same in a field it skips
        b'{"ids": ["' + b"\\u0000" * 5000 + b'"]}',                    # 5,000 bytes of NUL: no event's id
        b'{"ids": ["\\ud800"]}',                                       # a lone surrogate
    ]
    for body in hostile:
        assert len(body) <= 64 * 1024
        response = ask(served, body)
        assert response.status_code == 400, (body[:40], response.text)
    # A client that declares a body and never sends it holds only its own connection.
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(f"POST /v1/receipts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.token()}\r\n"
                     "Content-Length: 1000\r\n\r\n{".encode())
        still_serving(served)
    still_serving(served)
