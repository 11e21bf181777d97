"""Requests a hostile or broken client sends, against a real collector and the real OpenSearch node:
bodies that never fully arrive, encodings, methods, encoded paths, raw header bytes, batch positions,
the per-user rate limit, and the bulk metrics."""

import gzip
import socket
import time

import msgspec
import pytest

from event_collector.envelope import index_name
from support import CollectorProcess, event, metric, wait_until


@pytest.fixture(scope="module")
def served(tmp_path_factory, opensearch):
    collector = CollectorProcess(tmp_path_factory.mktemp("requests"), BODY_READ_TIMEOUT_SECONDS=5).start()
    yield collector
    collector.stop()


def raw_exchange(collector: CollectorProcess, request: bytes, half_close: bool = False) -> bytes:
    """Send raw bytes, optionally half-close, and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=10) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def request_head(collector: CollectorProcess, path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {collector.token()}",
             f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def indexed_after_marker(collector: CollectorProcess, opensearch, log_ids: set[str]) -> set[str]:
    """Which of `log_ids` are indexed, once an event sent afterwards has been indexed."""
    marker = event()
    assert collector.post_event(marker).status_code == 200
    wait_until(lambda: marker["log_id"] in opensearch.log_id_counts(collector.environment), timeout=60,
               message="the marker event indexed")
    return log_ids & set(opensearch.log_id_counts(collector.environment))


def test_a_body_cut_off_before_its_declared_length_is_never_kept(served, opensearch):
    single = msgspec.json.encode(event("cut-single"))
    refused_before = metric(served, "event_collector_requests_refused_total", reason="aborted")
    raw_exchange(served, request_head(served, "/events", len(single) + 430) + single, half_close=True)

    lines = [msgspec.json.encode(event(f"cut-batch-{n}")) for n in range(3)]
    body = b"\n".join(lines) + b'\n{"log_id": "cut-batch-3", "pa'
    raw_exchange(served, request_head(served, "/events/batch", len(body) + 200,
                                      "Content-Type: application/x-ndjson") + body, half_close=True)

    wait_until(lambda: metric(served, "event_collector_requests_refused_total", reason="aborted")
               == refused_before + 2, timeout=10, message="both requests counted as aborted")
    cut = {"cut-single", "cut-batch-0", "cut-batch-1", "cut-batch-2"}
    assert indexed_after_marker(served, opensearch, cut) == set()
    wait_until(lambda: served.pending_rows() == 0, timeout=30, message="no pending row left")


def test_a_gzip_event_is_inflated_and_an_unknown_encoding_gets_415(served, opensearch):
    sent = event("gzipped-single", label="inflated")
    response = served.http.post("/events", content=gzip.compress(msgspec.json.encode(sent)),
                                headers={**served.auth(), "Content-Encoding": "gzip"})
    assert response.json() == {"status": "created"}
    wait_until(lambda: opensearch.search(served.environment, {"term": {"log_id": "gzipped-single"}}), timeout=60)
    [hit] = opensearch.search(served.environment, {"term": {"log_id": "gzipped-single"}})
    assert hit["_source"]["event_info"]["label"] == "inflated"

    bomb = gzip.compress(b" " * (20 * 1024 * 1024))
    response = served.http.post("/events", content=bomb, headers={**served.auth(), "Content-Encoding": "gzip"})
    assert response.status_code == 413

    for path in ("/events", "/events/batch"):
        response = served.http.post(path, content=msgspec.json.encode(event()),
                                    headers={**served.auth(), "Content-Encoding": "br"})
        assert response.status_code == 415
        assert "Content-Encoding" in response.json()["error"]


@pytest.mark.parametrize(("method", "path", "status", "allow"), [
    ("POST", "/ping", 405, "GET, HEAD"),
    ("DELETE", "/ping", 405, "GET, HEAD"),
    ("POST", "/metrics", 405, "GET, HEAD"),
    ("PUT", "/events", 405, "POST"),
    ("GET", "/events/batch", 405, "POST"),
])
def test_a_route_answers_other_methods_with_405_and_allow(served, method, path, status, allow):
    response = served.http.request(method, path, headers=served.auth())
    assert response.status_code == status
    assert response.headers["allow"] == allow


@pytest.mark.parametrize("path", ["/ping", "/metrics"])
def test_head_is_answered_on_get_routes_without_a_body(served, path):
    response = served.http.head(path)
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


def test_an_encoded_slash_does_not_reach_the_batch_route(served):
    body = msgspec.json.encode([event()])
    answer = raw_exchange(served, request_head(served, "/events%2Fbatch", len(body), "Connection: close") + body)
    assert answer.startswith(b"HTTP/1.1 404")


def test_header_bytes_are_kept_faithfully(served, opensearch):
    body = msgspec.json.encode(event("latin-1-header"))
    raw_exchange(served, request_head(served, "/events", len(body), "Connection: close").replace(
        b"Host: x", b"Host: x\r\ndevice-uuid: caf\xe9\r\nos-version: \xea\xb0\xa4\xeb\x9f\xad\xec\x8b\x9c\r\n"
        b"app-version:\t 1.2 \t ") + body)
    wait_until(lambda: opensearch.search(served.environment, {"term": {"log_id": "latin-1-header"}}), timeout=60)
    [hit] = opensearch.search(served.environment, {"term": {"log_id": "latin-1-header"}})
    # Not UTF-8: each byte is its latin-1 character. UTF-8 (what apps send): the text it encodes.
    assert hit["_source"]["device_uuid"] == "caf\u00e9"
    assert hit["_source"]["os_version"] == "갤럭시"
    # Whitespace around a value is HTTP's framing, not the value.
    assert hit["_source"]["app_version"] == "1.2"


def test_ndjson_rejections_carry_the_line_number(served):
    body = b"\n".join([msgspec.json.encode(event()), b"", b"", b'{"log_id": "x"}', b"", b"{broken"])
    response = served.http.post("/events/batch", content=body,
                                headers={**served.auth(), "Content-Type": "application/x-ndjson"})
    answer = response.json()
    assert answer["accepted"] == 1
    assert [(r["index"], r["line"], r["status"]) for r in answer["rejected"]] == [(3, 4, 400), (5, 6, 400)]


def test_a_bulk_whose_events_were_dead_lettered_is_not_counted_ok(collector, opensearch):
    index = index_name(collector.environment, time.time())
    opensearch.http.put(f"/{index}", json={"mappings": {"properties": {
        "event_info": {"properties": {"label": {"type": "long"}}}}}}).raise_for_status()
    assert collector.post_event(event("refused-by-mapping", label="not a number")).status_code == 200
    wait_until(lambda: collector.dead_letters(), timeout=60, message="the event dead-lettered")
    assert metric(collector, "event_collector_bulk_requests_total", result="rejected") == 1
    assert metric(collector, "event_collector_bulk_requests_total", result="ok") == 0


def test_the_per_user_rate_limit_answers_429_and_spares_other_users(collector_factory, opensearch):
    limited = collector_factory(RATE_LIMIT_PER_USER=0.5, RATE_LIMIT_BURST=5)
    statuses = [limited.http.post("/events", json=event(), headers=limited.auth("noisy")) for _ in range(8)]
    assert [r.status_code for r in statuses] == [200] * 5 + [429] * 3
    assert int(statuses[-1].headers["retry-after"]) >= 1
    assert limited.http.post("/events", json=event(), headers=limited.auth("quiet")).status_code == 200

    batch = [event() for _ in range(8)]
    response = limited.http.post("/events/batch", json=batch, headers=limited.auth("batcher"))
    answer = response.json()
    assert (response.status_code, answer["accepted"]) == (200, 5)
    assert [(r["index"], r["status"]) for r in answer["rejected"]] == [(5, 429), (6, 429), (7, 429)]
    assert "retry-after" in response.headers
    assert metric(limited, "event_collector_events_received_total", outcome="rate_limited") == 6
    assert metric(limited, "event_collector_requests_refused_total", reason="rate_limited") == 3


def test_a_log_id_is_global_so_a_second_user_cannot_replace_the_first_users_event(served, opensearch):
    # The decision of docs/security.md: `_id = log_id` across users, as the original and its dashboards
    # have it; log_ids must be unguessable (UUIDs), and the first event with an id is the one kept.
    first = served.http.post("/events", json=event("shared-id", label="first"), headers=served.auth("alice"))
    assert first.status_code == 200
    wait_until(lambda: opensearch.search(served.environment, {"term": {"log_id": "shared-id"}}), timeout=60)
    second = served.http.post("/events", json=event("shared-id", label="second"), headers=served.auth("mallory"))
    assert second.status_code == 200
    indexed_after_marker(served, opensearch, {"shared-id"})
    [hit] = opensearch.search(served.environment, {"term": {"log_id": "shared-id"}})
    assert (hit["_source"]["user_id"], hit["_source"]["event_info"]["label"]) == ("alice", "first")
