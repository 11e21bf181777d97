"""The HTTP contract, against a real collector process: auth matrix and every kind of bad input."""

import gzip
import socket
import subprocess
import sys
import time

import httpx
import jwt
import pytest

from support import TEST_SECRET, CollectorProcess, event, wait_until


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    collector = CollectorProcess(tmp_path_factory.mktemp("api"), BODY_READ_TIMEOUT_SECONDS=1).start()
    yield collector
    collector.stop()


def post(collector: CollectorProcess, body: bytes, headers: dict | None = None) -> httpx.Response:
    return collector.http.post("/events", content=body, headers={**collector.auth(), **(headers or {})})


def test_ping_answers_pong_without_auth(served):
    response = served.http.get("/ping")
    assert (response.status_code, response.text) == (200, "pong")


def token(payload: dict, key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def unsigned(payload: dict) -> str:
    import base64
    import json

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


LATER = int(time.time()) + 3600


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing Authorization"),
        ("Basic dXNlcjpwYXNz", "Bearer"),
        ("Token " + token({"sub": "u", "exp": LATER}), "Bearer"),
        ("Bearer", "Bearer"),
        ("Bearer " + token({"sub": "u", "exp": LATER}, key="another-secret-" + "y" * 32), "Signature"),
        ("Bearer " + token({"sub": "u", "exp": int(time.time()) - 10}), "expired"),
        ("Bearer " + unsigned({"sub": "u", "exp": LATER}), "invalid token"),
        ("Bearer " + token({"sub": "u", "exp": LATER}, algorithm="HS512"), "invalid token"),
        ("Bearer " + token({"sub": "u"}), "exp"),
        ("Bearer garbage", "invalid token"),
    ],
)
def test_requests_without_a_valid_token_get_401(served, authorization, message):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = served.http.post("/events", json=event(), headers=headers)
    assert response.status_code == 401
    assert message in response.json()["error"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_an_empty_secret_stops_start_up_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "event_collector.cli", "serve"], cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "JWT_SECRET": ""}, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "JWT_SECRET" in result.stderr


BAD_BODIES = [
    (b"{not json", "not valid JSON", None),
    (b'{"log_id":"\xff","page":"p","event":"e"}', "UTF-8", None),
    (b'{"log_id":1,"page":"p","event":"e"}', "Expected `str`", "log_id"),
    (b'{"page":"p","event":"e"}', "missing required field", "log_id"),
    (b'{"log_id":"a","event":"e"}', "missing required field", "page"),
    (b'{"log_id":"a","page":"p"}', "missing required field", "event"),
    (b'{"log_id":"a","page":"p","event":"e","param":[1]}', "object", "param"),
    (b'{"log_id":"a","page":"p","event":"e","param":' + b'{"a":' * 21 + b"1" + b"}" * 21 + b"}",
     "deeper than 20", "param"),
    (b'{"log_id":"a","page":"' + b"x" * 1025 + b'","event":"e"}', "length <= 1024", "page"),
    (b'{"log_id":"' + b"i" * 513 + b'","page":"p","event":"e"}', "longer than 512 bytes", "log_id"),
    (b"", "empty", None),
]


@pytest.mark.parametrize(("body", "message", "field"), BAD_BODIES)
def test_bad_bodies_get_400_naming_the_problem(served, body, message, field):
    response = post(served, body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert response.json().get("field") == field
    assert post(served, b'{"log_id":"ok","page":"p","event":"e"}').status_code == 200


def test_an_oversized_body_gets_413_whether_declared_or_streamed(served):
    big = b'{"log_id":"a","page":"p","event":"e","param":{"k":"' + b"v" * (1024 * 1024) + b'"}}'
    assert post(served, big).status_code == 413

    def chunks():
        for _ in range(20):
            yield b"x" * 100_000

    response = served.http.post("/events", content=chunks(), headers=served.auth())
    assert response.status_code == 413
    assert "MAX_BODY_BYTES" in response.json()["error"]
    assert served.http.get("/ping").text == "pong"


def test_an_overlong_copied_header_is_refused(served):
    response = post(served, b'{"log_id":"a","page":"p","event":"e"}', {"device-uuid": "d" * 1025})
    assert response.status_code == 400
    assert response.json()["field"] == "device-uuid"


def test_a_client_stalling_mid_body_holds_up_nobody(served):
    with socket.create_connection(("127.0.0.1", served.port)) as stalled:
        stalled.sendall(
            b"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + served.token().encode()
            + b"\r\nContent-Length: 1000\r\n\r\n{\"log_id\":")
        assert post(served, b'{"log_id":"other","page":"p","event":"e"}').json() == {"status": "created"}
        # The other client was answered while the stalled one is still waiting for its own answer.
        stalled.setblocking(False)
        with pytest.raises(BlockingIOError):
            stalled.recv(1024)
        # The stalled client itself is answered once BODY_READ_TIMEOUT_SECONDS has passed.
        stalled.setblocking(True)
        stalled.settimeout(10)
        assert stalled.recv(1024).startswith(b"HTTP/1.1 408")


def test_unknown_routes_and_methods_get_json_errors(served):
    assert served.http.get("/nowhere").status_code == 404
    response = served.http.get("/events", headers=served.auth())
    assert response.status_code == 405
    assert "POST" in response.json()["error"]


def test_content_type_is_not_enforced_for_beacons(served):
    response = post(served, b'{"log_id":"beacon","page":"p","event":"e"}', {"Content-Type": "text/plain"})
    assert response.json() == {"status": "created"}


def test_the_server_keeps_serving_after_hostile_input(served):
    hostile = [b"\x00" * 1000, gzip.compress(b"{}"), b"[" * 100_000, b'{"log_id":' * 50_000]
    for body in hostile:
        assert post(served, body).status_code == 400
    wait_until(lambda: served.http.get("/ping").text == "pong", timeout=5)
