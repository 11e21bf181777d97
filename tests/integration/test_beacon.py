"""POST /events/beacon against a real collector and OpenSearch: where the token and device fields may be,
the same rules and durability as /events, and no token from a URL in any log line."""

import json
import socket
import time
import uuid

import jwt
import pytest

from support import TEST_SECRET, CollectorProcess, event, free_port, wait_until

DEVICE = {"device_uuid": "d-1", "app_version": "3.0", "os_version": "web"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    collector = CollectorProcess(tmp_path_factory.mktemp("beacon"), MAX_BODY_BYTES=4096).start()
    yield collector
    collector.stop()


def beacon(collector, body, params=None, headers=None, content_type="text/plain;charset=UTF-8"):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return collector.http.post("/events/beacon", params=params, content=content,
                               headers={"Content-Type": content_type, **(headers or {})})


def indexed(collector, opensearch, log_id):
    wait_until(lambda: log_id in opensearch.log_id_counts(collector.environment), timeout=30,
               message=f"{log_id} indexed")
    assert opensearch.log_id_counts(collector.environment)[log_id] == 1
    [hit] = opensearch.search(collector.environment, {"term": {"log_id": log_id}})
    return hit["_source"]


def test_a_token_in_the_query_and_device_fields_in_the_body(served, opensearch):
    token = served.token("beacon-user")
    sent = event(**DEVICE, param={"k": "v"})
    response = beacon(served, sent, params={"token": token}, headers={"User-Agent": "Mozilla/5.0 test"})
    assert (response.status_code, response.content) == (204, b"")
    document = indexed(served, opensearch, sent["log_id"])
    assert (document["user_id"], document["device_uuid"], document["app_version"], document["os_version"],
            document["user_agent"]) == ("beacon-user", "d-1", "3.0", "web", "Mozilla/5.0 test")
    assert document["event_info"]["param"] == {"k": "v"}
    assert "token" not in document and token not in json.dumps(document)


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/json", None])
def test_a_token_in_the_body_never_reaches_the_document(served, opensearch, content_type):
    token = served.token("body-user")
    sent = event(token=token)
    headers = {"Content-Type": content_type} if content_type else {}
    response = served.http.post("/events/beacon", content=json.dumps(sent).encode(), headers=headers)
    assert response.status_code == 204
    document = indexed(served, opensearch, sent["log_id"])
    assert document["user_id"] == "body-user"
    assert "token" not in document and token not in json.dumps(document)


def test_an_authorization_header_works_and_request_headers_win_over_body_fields(served, opensearch):
    sent = event(**DEVICE)
    response = beacon(served, sent, headers={**served.auth("header-user"), "device-uuid": "from-header"})
    assert response.status_code == 204
    document = indexed(served, opensearch, sent["log_id"])
    assert (document["user_id"], document["device_uuid"], document["app_version"]) == ("header-user", "from-header",
                                                                                     "3.0")


@pytest.mark.parametrize(("body", "params", "headers", "status", "field"), [
    (event(), None, None, 401, None),
    (event(), {"token": ""}, None, 401, None),
    (event(), {"token": "not.a.token"}, None, 401, None),
    (event(token="x"), {"token": "y"}, None, 400, "token"),
    (event(), {"token": "a", "other": "1"}, {"Authorization": "Bearer b"}, 400, "token"),
    (event(), [("token", "a"), ("token", "b")], None, 400, "token"),
    (event(token=42), None, None, 400, "token"),
    (event(device_uuid=["x"]), "valid", None, 400, "device_uuid"),
    (event(app_version="v" * 1025), "valid", None, 400, "app_version"),
    ({"page": "/p", "event": "e"}, "valid", None, 400, "log_id"),
    (b"{not json", "valid", None, 400, None),
    (b"[]", "valid", None, 400, None),
    (b"", "valid", None, 400, None),
    (event(param={"p": "x" * 5000}), "valid", None, 413, None),
])
def test_bad_beacons_get_a_precise_4xx(served, body, params, headers, status, field):
    if params == "valid":
        params = {"token": served.token()}
    response = beacon(served, body, params=params, headers=headers)
    assert response.status_code == status, response.text
    if field is not None:
        assert response.json()["field"] == field


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_a_form_body_is_refused_with_415(served, content_type):
    response = beacon(served, event(), params={"token": served.token()}, content_type=content_type)
    assert response.status_code == 415
    assert "text/plain" in response.json()["error"]


def test_beacons_share_the_rate_limit_of_events(collector_factory):
    collector = collector_factory(RATE_LIMIT_PER_USER=0.01, RATE_LIMIT_BURST=1)
    assert collector.post_event(event(), headers=collector.auth("limited")).status_code == 200
    response = beacon(collector, event(), params={"token": collector.token("limited")})
    assert response.status_code == 429
    assert response.headers["retry-after"]


def test_a_beacon_is_kept_durably_when_opensearch_is_down(collector_factory):
    collector = collector_factory(OPEN_SEARCH_DNS=f"http://127.0.0.1:{free_port()}")
    assert beacon(collector, event(), params={"token": collector.token()}).status_code == 204
    assert collector.pending_rows() == 1


def test_no_token_from_a_url_reaches_any_log_line(tmp_path, opensearch):
    collector = CollectorProcess(tmp_path, ACCESS_LOG="true", MAX_HEADER_LINE_BYTES=2048).start()
    now = int(time.time())
    tokens = {
        "valid": collector.token("leak-check"),
        "wrong secret": jwt.encode({"sub": "u", "exp": now + 60}, "another-" + TEST_SECRET, algorithm="HS256"),
        "expired": jwt.encode({"sub": "u", "exp": now - 60}, TEST_SECRET, algorithm="HS256"),
        "malformed": "eyJhbGciOiJIUzI1NiJ9.not-canonical!." + uuid.uuid4().hex,
        "long": jwt.encode({"sub": "u", "exp": now + 60, "pad": "p" * 3000}, TEST_SECRET, algorithm="HS256"),
    }
    try:
        for name, token in tokens.items():
            for params in ({"token": token}, {"other": "1", "token": token}):
                beacon(collector, event(), params=params)
                beacon(collector, b"{broken", params=params)
                collector.http.get("/events/beacon", params=params)
                collector.http.post("/events/beacon/", params=params, content=b"{}")
                collector.http.post("/events", params=params, json=event())
            # A spelling of the name that only a decoder sees as "token".
            collector.http.post(f"/events/beacon?%74oken={token}", content=json.dumps(event()).encode())
        # A request line over MAX_HEADER_LINE_BYTES, refused before the app sees it.
        with socket.create_connection(("127.0.0.1", collector.port)) as raw:
            raw.sendall(f"POST /events/beacon?token={tokens['long']} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert raw.recv(100).startswith(b"HTTP/1.1 414")
        wait_until(lambda: "[redacted]" in collector.log(), timeout=10, message="the access log to be written")
    finally:
        collector.stop()
    log = collector.log()
    # The access log was on, one line per request (none held back as a repeat).
    assert log.count("/events/beacon?[redacted]") >= 4 * len(tokens)
    for name, token in tokens.items():
        for piece in (token, token.split(".")[-1]):
            assert piece not in log, f"the {name} token is in the log"


def test_a_gzipped_beacon_is_inflated_like_any_ingest_body(served, opensearch):
    import gzip

    sent = event(token=served.token("gzip-user"))
    response = served.http.post("/events/beacon", content=gzip.compress(json.dumps(sent).encode()),
                                headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 204
    assert indexed(served, opensearch, sent["log_id"])["user_id"] == "gzip-user"
