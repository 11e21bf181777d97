"""HTTP behaviour of the single-event fast path below ASGI (api/fastpath.py, docs/http.md), over raw sockets
against real collector processes: keep-alive, pipelining mixed with ASGI routes, 100-continue, chunked
bodies, HTTP/1.0, Connection: close, bodies split across writes or stalled, durable answers after the
commit, and refusals byte-for-byte the same as the ASGI app's (the same request with an Origin header,
which CORS being off leaves without effect, goes through the app)."""

import re
import socket
import time

import msgspec
import pytest

from support import CollectorProcess, event, free_port, metric, wait_until

BODY_TIMEOUT_SECONDS = 2
MAX_BODY_BYTES = 4096
HEADER_TIMEOUT_SECONDS = 2
FAST_ANSWERS = "event_collector_fast_path_answers_total"


@pytest.fixture(scope="module")
def served(tmp_path_factory, opensearch):
    collector = CollectorProcess(tmp_path_factory.mktemp("http"), ACK_MODE="memory",
                                 BODY_READ_TIMEOUT_SECONDS=BODY_TIMEOUT_SECONDS, MAX_BODY_BYTES=MAX_BODY_BYTES,
                                 HEADER_READ_TIMEOUT_SECONDS=HEADER_TIMEOUT_SECONDS).start()
    yield collector
    collector.stop()


@pytest.fixture(scope="module", params=["NORMAL", "FULL"])
def durable(request, tmp_path_factory, opensearch):
    # OpenSearch unreachable: whatever is answered 2xx stays in the store, where the test can count it.
    # NORMAL: the journal's write ends within the data callback; FULL: the answer waits for an fdatasync.
    collector = CollectorProcess(tmp_path_factory.mktemp("http-durable"), ACK_MODE="durable",
                                 SQLITE_SYNCHRONOUS=request.param,
                                 OPEN_SEARCH_DNS=f"http://127.0.0.1:{free_port()}").start()
    collector.synchronous = request.param
    yield collector
    collector.stop()


def post(collector: CollectorProcess, body: bytes, *extra: str, subject: str = "user-1",
         version: str = "1.1", token: bool = True) -> bytes:
    lines = [f"POST /events HTTP/{version}", "Host: x", f"Content-Length: {len(body)}", *extra]
    if token:
        lines.insert(2, f"Authorization: Bearer {collector.token(subject)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def event_body(log_id: str | None = None, **fields) -> bytes:
    return msgspec.json.encode(event(log_id, **fields))


class Connection:
    """One client connection reading whole responses (all of this API's answers carry a Content-Length)."""

    def __init__(self, collector: CollectorProcess, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", collector.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        match = re.search(rb"\r\ncontent-length: (\d+)", head, re.I)
        length = int(match.group(1)) if match else 0
        while len(rest) < length:
            self._read()
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]

    def closed(self) -> bool:
        """True when the server closes the connection (EOF or reset) with nothing more to read."""
        try:
            return self.sock.recv(65536) == b"" and not self.buffer
        except ConnectionResetError:
            return True

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed; unread: {self.buffer[:300]!r}")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def body(response: bytes) -> dict:
    return msgspec.json.decode(response.partition(b"\r\n\r\n")[2])


def without_date(response: bytes) -> bytes:
    return re.sub(rb"\r\ndate: [^\r]*", b"", response)


def fast_answers(collector: CollectorProcess) -> float:
    return metric(collector, FAST_ANSWERS)


def wait_fast_answers(collector: CollectorProcess, expected: float) -> None:
    # Exact once /metrics is asked (fast answers are added before any request the app answers); waited for
    # all the same, as a request the sweep answers (a 408) is added by the sweep.
    wait_until(lambda: fast_answers(collector) == expected, timeout=10, message=f"{expected} fast-path answers")


def test_many_events_on_one_keep_alive_connection_are_answered_on_the_fast_path(served, opensearch):
    before = fast_answers(served)
    log_ids = [f"keepalive-{index}-{time.time_ns()}" for index in range(100)]
    connection = Connection(served)
    for log_id in log_ids:
        connection.send(post(served, event_body(log_id)))
        response = connection.response()
        assert status(response) == 200 and body(response) == {"status": "created"}, response
        assert b"connection: close" not in response.lower()
        assert re.search(rb"\r\ndate: ", response), response  # uvicorn's default headers are kept
    connection.close()
    wait_fast_answers(served, before + 100)
    wait_until(lambda: set(log_ids) <= set(opensearch.log_id_counts(served.environment)), timeout=60,
               message="the 100 events indexed")


def pipelined(collector: CollectorProcess, tag: str) -> tuple[list[bytes], list[str]]:
    """Requests mixing the fast path and ASGI routes, and the log_ids of the events among them."""
    log_ids = [f"{tag}-{index}-{time.time_ns()}" for index in range(5)]
    batch = msgspec.json.encode([event(log_ids[3])])
    # Answered in one read: the first three on the fast path, one after another; then, once an ASGI answer
    # is pending, the rest waits its turn through the app.
    return [
        post(collector, event_body(log_ids[0])),
        post(collector, event_body(log_ids[1])),
        post(collector, b"{not json"),
        b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
        ("POST /events/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + collector.token() +
         f"\r\nContent-Length: {len(batch)}\r\n\r\n").encode() + batch,
        post(collector, event_body(log_ids[2]), "Origin: https://elsewhere.example"),
        post(collector, event_body(log_ids[4])),
        b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n",
    ], log_ids


def check_pipelined_answers(connection: Connection) -> None:
    answers = [connection.response() for _ in range(8)]
    assert [status(answer) for answer in answers] == [200, 200, 400, 200, 200, 200, 200, 200], answers
    assert body(answers[0]) == body(answers[1]) == {"status": "created"}
    assert "error" in body(answers[2])
    assert answers[3].endswith(b"pong")
    assert body(answers[4])["accepted"] == 1  # the batch's answer, in its place
    assert body(answers[5]) == body(answers[6]) == {"status": "created"}
    assert b"alive" in answers[7]


def test_pipelined_requests_mixing_fast_and_asgi_routes_are_answered_in_order(served, opensearch):
    before = fast_answers(served)
    requests, log_ids = pipelined(served, "pipelined")
    connection = Connection(served)
    connection.send(b"".join(requests))
    check_pipelined_answers(connection)
    connection.close()
    wait_fast_answers(served, before + 3)
    wait_until(lambda: set(log_ids) <= set(opensearch.log_id_counts(served.environment)), timeout=60,
               message="the pipelined events indexed")


def test_durable_mode_answers_after_the_commit_and_in_order_when_pipelined(durable):
    before_rows = durable.pending_rows()
    before = fast_answers(durable)
    connection = Connection(durable)
    for index in range(20):
        connection.send(post(durable, event_body(f"durable-{index}-{time.time_ns()}")))
        response = connection.response()
        assert status(response) == 200 and body(response) == {"status": "created"}, response
        # The 2xx came after the write: the event is in the journal the moment the answer is read.
        assert durable.pending_rows() == before_rows + index + 1
    requests, _ = pipelined(durable, "durable-pipelined")
    connection.send(b"".join(requests))
    check_pipelined_answers(connection)
    connection.close()
    assert durable.pending_rows() == before_rows + 20 + 5
    if durable.synchronous == "FULL":
        # While the first pipelined event waits for its fdatasync, the requests behind it queue for the app.
        wait_fast_answers(durable, before + 20 + 1)
    else:  # each write ends within the data callback: the pipeline goes as in memory mode (3 fast answers)
        wait_fast_answers(durable, before + 20 + 3)


def test_expect_100_continue_and_chunked_bodies_go_through_the_app(served):
    before = fast_answers(served)
    connection = Connection(served)
    payload = event_body()
    connection.send(post(served, b"", "Expect: 100-continue").replace(b"Content-Length: 0",
                                                                      f"Content-Length: {len(payload)}".encode()))
    assert connection.response().startswith(b"HTTP/1.1 100 Continue")
    connection.send(payload)
    assert status(connection.response()) == 200
    chunked = post(served, b"").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    half = len(payload) // 2
    connection.send(chunked + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, payload[:half], len(payload) - half,
                                                                      payload[half:]))
    response = connection.response()
    assert status(response) == 200 and body(response) == {"status": "created"}, response
    connection.close()
    assert fast_answers(served) == before


@pytest.mark.parametrize("extra", [(), ("Connection: keep-alive",)])
def test_http_1_0_is_answered_and_closed(served, extra):
    connection = Connection(served)
    connection.send(post(served, event_body(), *extra, version="1.0"))
    response = connection.response()
    assert status(response) == 200 and body(response) == {"status": "created"}, response
    assert b"\r\nconnection: close" in response
    assert connection.closed()
    connection.close()


def test_connection_close_is_answered_then_closed(served):
    before = fast_answers(served)
    connection = Connection(served)
    connection.send(post(served, event_body(), "Connection: close"))
    response = connection.response()
    assert status(response) == 200 and b"\r\nconnection: close\r\n" in response, response
    assert connection.closed()
    connection.close()
    wait_fast_answers(served, before + 1)


def test_requests_after_a_connection_close_one_in_the_same_write_are_not_answered(served):
    before = fast_answers(served)
    connection = Connection(served)
    connection.send(post(served, event_body(), "Connection: close") + post(served, event_body()) +
                    b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    response = connection.response()
    assert status(response) == 200 and b"\r\nconnection: close\r\n" in response, response
    assert connection.closed()
    connection.close()
    # Nothing after the last request is taken: the second event was neither kept nor answered.
    wait_fast_answers(served, before + 1)
    assert '"level":"ERROR"' not in served.log()


def test_an_idle_connection_after_a_fast_answer_is_closed_after_the_header_timeout(served):
    connection = Connection(served, timeout=HEADER_TIMEOUT_SECONDS + 10)
    connection.send(post(served, event_body()))
    assert status(connection.response()) == 200
    answered = time.monotonic()
    assert connection.closed()
    elapsed = time.monotonic() - answered
    assert HEADER_TIMEOUT_SECONDS <= elapsed < HEADER_TIMEOUT_SECONDS + 2, elapsed
    connection.close()


def test_a_body_split_across_many_writes_is_answered(served, opensearch):
    before = fast_answers(served)
    log_id = f"split-{time.time_ns()}"
    request = post(served, event_body(log_id, page="/" + "p" * 200))
    connection = Connection(served)
    head, _, payload = request.partition(b"\r\n\r\n")
    connection.send(head[:10])
    connection.send(head[10:] + b"\r\n\r\n")
    for offset in range(0, len(payload), 16):
        connection.send(payload[offset:offset + 16])
        time.sleep(0.005)  # separate segments, so the body arrives in many reads
    response = connection.response()
    assert status(response) == 200 and body(response) == {"status": "created"}, response
    connection.close()
    wait_fast_answers(served, before + 1)
    wait_until(lambda: log_id in opensearch.log_id_counts(served.environment), timeout=60,
               message="the split event indexed")


def test_a_stalled_body_gets_408_after_the_body_timeout(served):
    before = metric(served, "event_collector_requests_refused_total", reason="timeout")
    connection = Connection(served, timeout=BODY_TIMEOUT_SECONDS + 10)
    payload = event_body()
    started = time.monotonic()
    connection.send(post(served, payload)[:-10])
    response = connection.response()
    elapsed = time.monotonic() - started
    assert status(response) == 408 and body(response) == {"error": "request body not received in time"}
    assert BODY_TIMEOUT_SECONDS <= elapsed < BODY_TIMEOUT_SECONDS + 3, elapsed
    assert connection.closed()
    connection.close()
    assert metric(served, "event_collector_requests_refused_total", reason="timeout") == before + 1


def compare_with_the_app(collector: CollectorProcess, request: bytes) -> bytes:
    """The fast path's answer to `request`, after checking it is the app's answer byte-for-byte but the date."""
    before = fast_answers(collector)
    connection = Connection(collector)
    connection.send(request)
    fast = connection.response()
    head, _, rest = request.partition(b"\r\n")
    connection.send(head + b"\r\nOrigin: https://elsewhere.example\r\n" + rest)
    through_app = connection.response()
    connection.close()
    assert without_date(fast) == without_date(through_app)
    wait_fast_answers(collector, before + 1)
    return fast


@pytest.mark.parametrize("name, request_of, expected", [
    ("no token", lambda c: post(c, event_body(), token=False), 401),
    ("bad token", lambda c: post(c, event_body(), "Authorization: Bearer not.a.token", token=False), 401),
    ("not json", lambda c: post(c, b'{"log_id": '), 400),
    ("missing field", lambda c: post(c, b'{"log_id": "x1"}'), 400),
    ("over MAX_BODY_BYTES", lambda c: post(c, event_body(page="/" + "x" * MAX_BODY_BYTES)), 413),
    ("header too long", lambda c: post(c, event_body(), "Device-Uuid: " + "d" * 5000), 400),
])
def test_refusals_are_the_apps_answers(served, name, request_of, expected):
    answer = compare_with_the_app(served, request_of(served))
    assert status(answer) == expected, answer


def test_rate_limited_and_unavailable_answers_are_the_apps(collector_factory):
    limited = collector_factory(RATE_LIMIT_PER_USER=0.01, RATE_LIMIT_BURST=1)
    connection = Connection(limited)
    connection.send(post(limited, event_body(), subject="limited"))
    assert status(connection.response()) == 200
    connection.close()
    answer = compare_with_the_app(limited, post(limited, event_body(), subject="limited"))
    assert status(answer) == 429 and b"\r\nretry-after: " in answer, answer

    # No OpenSearch, a one-event buffer and a store already over its cap: events are refused 503.
    full = collector_factory(OPEN_SEARCH_DNS=f"http://127.0.0.1:{free_port()}", ACK_MODE="memory",
                             QUEUE_CAPACITY=1, PENDING_MAX_BYTES=1)
    connection = Connection(full)
    statuses = []
    for _ in range(20):
        connection.send(post(full, event_body()))
        statuses.append(status(connection.response()))
        if statuses[-1] == 503:
            break
    connection.close()
    assert statuses[-1] == 503, statuses
    # The shipper may free the one-event buffer between the two requests: compare once both are refused.
    for _ in range(10):
        try:
            answer = compare_with_the_app(full, post(full, event_body()))
            break
        except AssertionError:
            continue
    assert status(answer) == 503 and b"\r\nretry-after: 5\r\n" in answer, answer


def test_fast_path_off_sends_everything_through_the_app(collector_factory):
    collector = collector_factory(FAST_PATH="false")
    connection = Connection(collector)
    for _ in range(3):
        connection.send(post(collector, event_body()))
        assert status(connection.response()) == 200
    connection.close()
    assert fast_answers(collector) == 0
