"""Every line a collector process writes is JSON, and none holds a token, the JWT secret or a password,
whatever tokens it was sent and wherever they were put."""

import json
import signal
import socket
import time

import jwt

from support import OPENSEARCH_URL, TEST_SECRET, event, wait_until

PASSWORD = "pw-" + "q" * 20


def test_no_token_secret_or_password_appears_in_anything_the_process_writes(collector_factory, opensearch):
    node = OPENSEARCH_URL.split("://", 1)[1]
    # The dev node has no security plugin and ignores the credentials; the process still holds them.
    collector = collector_factory(LOG_FORMAT="json", LOG_LEVEL="DEBUG",
                                  OPEN_SEARCH_DNS=f"http://operator:{PASSWORD}@{node}")
    now = int(time.time())
    valid = collector.token("user-7")
    tokens = {
        "valid": valid,
        "wrong key": jwt.encode({"sub": "u", "exp": now + 60}, "another-key-" + "z" * 30, algorithm="HS256"),
        "expired": jwt.encode({"sub": "u", "exp": now - 60}, TEST_SECRET, algorithm="HS256"),
        "odd claims": jwt.encode({"sub": ["not", "a", "string"], "exp": now + 60}, TEST_SECRET, algorithm="HS256"),
        "no exp": jwt.encode({"sub": "u"}, TEST_SECRET, algorithm="HS256"),
    }
    sent = []
    for name, token in tokens.items():
        for headers in ({"Authorization": f"Bearer {token}"}, {"Authorization": token},
                        {"Authorization": f"Basic {token}"}, {"Cookie": f"token={token}", "X-Token": token}):
            e = event()
            response = collector.http.post("/events", json=e, headers=headers)
            assert response.status_code in (200, 401), (name, response.text)
            if response.status_code == 200:
                sent.append(e["log_id"])
        collector.http.get(f"/events?access_token={token}", headers={"Authorization": f"Bearer {token}"})
        collector.http.post(f"/nowhere/{token}", headers={"Authorization": f"Bearer {token}"})
        # A body that is not an event, and a copied header too long to keep, both with the token in them.
        collector.http.post("/events", content=f'{{"log_id": "{token}"', headers={"Authorization": f"Bearer {token}"})
        collector.http.post("/events", json=event(), headers={"Authorization": f"Bearer {valid}",
                                                               "device-uuid": token * 40})
        # A request the HTTP parser refuses, with the token in its head.
        with socket.create_connection(("127.0.0.1", collector.port)) as raw:
            raw.sendall(f"GET /ping?t={token} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nBad Header\r\n\r\n".encode())
            raw.recv(4096)
    assert collector.stop(signal.SIGTERM) == 0
    wait_until(lambda: set(sent) <= set(opensearch.log_id_counts(collector.environment)), timeout=30,
               message="the accepted events indexed (the process used its credentials)")

    written = collector.log()
    lines = written.splitlines()
    assert len(lines) > 5
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert {"uvicorn.error", "event_collector.lifecycle"} <= {entry["logger"] for entry in entries}
    for secret in [TEST_SECRET, PASSWORD, *tokens.values(), *(t.rsplit(".", 1)[1] for t in tokens.values())]:
        assert secret not in written, f"{secret[:12]}... appears in the process's output"
