"""Connection-level attacks on a real collector process over raw sockets (api/protocol.py): oversized heads,
too many headers, clients that never finish their head, more connections than descriptors, and a refused
body on a connection the client asked to close. Each test prints its figures (run with -s to see them)."""

import resource
import socket
import threading
import time
from pathlib import Path

import msgspec
import pytest

from support import CollectorProcess, event, metric

HEADER_TIMEOUT_SECONDS = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory, opensearch):
    collector = CollectorProcess(tmp_path_factory.mktemp("connections"), ACK_MODE="memory",
                                 HEADER_READ_TIMEOUT_SECONDS=HEADER_TIMEOUT_SECONDS).start()
    yield collector
    collector.stop()


def exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send `request` and read until the server closes, resets or goes quiet for `timeout`: what arrived."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        received = b""
        try:
            sock.sendall(request)
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:  # a reset or a timeout after (or instead of) the answer: what arrived is the answer
            pass
        return received


def ping_ms(port: int) -> float:
    started = time.perf_counter()
    answer = exchange(port, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=30)
    assert answer.endswith(b"pong"), answer[:200]
    return (time.perf_counter() - started) * 1000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def seconds_until_closed(sock: socket.socket, limit: float, trickle: bytes = b"", every: float = 0.3) -> float:
    """Seconds until the server closes `sock` (at most `limit`), sending `trickle` every `every` seconds."""
    started = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - started < limit:
        try:
            if trickle:
                sock.sendall(trickle)
            if sock.recv(65536) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    return time.monotonic() - started


class HugeHeaderSender(threading.Thread):
    """Sends one request head whose single header is `size` bytes, 1 MiB at a time, for at most `seconds`
    and until the server stops reading, while another thread collects the answer."""

    def __init__(self, port: int, size: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.port, self.size, self.seconds = port, size, seconds
        self.answer = b""
        self.sent = 0
        self.elapsed = 0.0

    def run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.seconds)
        reader = threading.Thread(target=self._read, args=(sock,), daemon=True)
        reader.start()
        started = time.monotonic()
        chunk = b"a" * (1 << 20)
        try:
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while self.sent < self.size and time.monotonic() - started < self.seconds:
                sock.sendall(chunk)
                self.sent += len(chunk)
        except OSError:
            pass  # the server stopped reading: refused
        self.elapsed = time.monotonic() - started
        reader.join(2)
        sock.close()

    def _read(self, sock: socket.socket) -> None:
        try:
            while chunk := sock.recv(65536):
                self.answer += chunk
        except OSError:
            pass


def test_a_64_mb_header_is_refused_at_once_and_others_are_served_meanwhile(served):
    pid = served.process.pid
    rss_before = rss_mb(pid)
    senders = [HugeHeaderSender(served.port, 64 << 20, seconds=5) for _ in range(4)]
    for sender in senders:
        sender.start()
    latencies, peak_rss = [], rss_before
    while any(sender.is_alive() for sender in senders):
        latencies.append(ping_ms(served.port))
        peak_rss = max(peak_rss, rss_mb(pid))
    print(f"\n4 x 64 MB header: answers {[sender.answer[:12] for sender in senders]}, "
          f"sent {[sender.sent >> 20 for sender in senders]} MiB in {[round(s.elapsed, 2) for s in senders]} s "
          f"before the server stopped reading; "
          f"/ping max {max(latencies):.1f} ms over {len(latencies)}; RSS {rss_before:.0f} -> {peak_rss:.0f} MB")
    for sender in senders:
        assert sender.answer.startswith(b"HTTP/1.1 431 "), sender.answer[:100]
        # Once refused, the server reads and drops at most LINGER_BYTES (16 MiB), then resets the connection.
        assert sender.sent < 48 << 20
    assert max(latencies) < 500
    assert peak_rss - rss_before < 32


_PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize("head, status", [
    (_PING + b"".join(b"X-Header-%d: v\r\n" % n for n in range(10_000)) + b"\r\n", b"431"),
    (_PING + b"".join(b"X-%d: v\r\n" % n for n in range(101)) + b"\r\n", b"431"),
    (_PING + b"X-Long: " + b"v" * (20 * 1024) + b"\r\n\r\n", b"431"),
    (b"GET /ping?" + b"q" * (32 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    (b"GET /ping?" + b"q" * (1024 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
], ids=["10000-headers", "101-headers", "20-KiB-header-line", "32-KiB-request-line", "1-MiB-request-line"])
def test_too_many_headers_and_overlong_lines_are_refused(served, head, status):
    before = refused(served, "head_too_large")
    answer = exchange(served.port, head)
    print(f"\n{len(head)} bytes: {answer[:40]!r}")
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), answer[:200]
    assert b"connection: close" in answer
    assert ping_ms(served.port) < 1000
    assert refused(served, "head_too_large") == before + 1


@pytest.mark.parametrize("case", ["idle", "slowloris", "idle-after-a-response"])
def test_a_connection_that_does_not_complete_its_head_in_time_is_closed(served, case):
    before = refused(served, "head_timeout")
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        trickle = b""
        if case == "slowloris":
            sock.sendall(_PING)
            trickle = b"X-Slow: one more line\r\n"
        elif case == "idle-after-a-response":
            sock.sendall(_PING + b"\r\n")
            answer = b""
            while not answer.endswith(b"pong"):
                answer += sock.recv(65536)
        held = seconds_until_closed(sock, limit=5, trickle=trickle)
    print(f"\n{case}: closed after {held:.2f} s (HEADER_READ_TIMEOUT_SECONDS={HEADER_TIMEOUT_SECONDS})")
    # The sweep runs every quarter of the timeout: closed between the timeout and a little after.
    assert HEADER_TIMEOUT_SECONDS * 0.9 <= held < HEADER_TIMEOUT_SECONDS + 1.5
    # An idle keep-alive connection ending after its answers is normal, not a refusal.
    assert refused(served, "head_timeout") == before + (0 if case == "idle-after-a-response" else 1)


def test_many_idle_connections_with_few_descriptors_leave_the_collector_answering(collector_factory):
    collector = collector_factory(rlimits={resource.RLIMIT_NOFILE: (256, 256)}, ACK_MODE="memory",
                                  HEADER_READ_TIMEOUT_SECONDS=2)
    idle = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(300)]
    try:
        first = exchange(collector.port, _PING + b"\r\n")
        descriptors = len(list(Path(f"/proc/{collector.process.pid}/fd").iterdir()))
        # Once the idle ones are closed for their head timeout, /ping is served while the client holds all 300.
        served_after = seconds_until_pong(collector.port, limit=10)
    finally:
        for sock in idle:
            sock.close()
    print(f"\n300 idle connections, 256 descriptors: first /ping {first[:40]!r}, {descriptors} descriptors open, "
          f"/ping 200 after {served_after} s more")
    assert first.startswith(b"HTTP/1.1 503 ") and b"retry-after: 5" in first, first[:200]
    assert descriptors < 256
    assert served_after is not None
    assert "leaves room for 128 connections, not MAX_CONNECTIONS=10000" in collector.log()


def test_connections_beyond_max_connections_get_503_with_retry_after(collector_factory):
    collector = collector_factory(ACK_MODE="memory", MAX_CONNECTIONS=20, HEADER_READ_TIMEOUT_SECONDS=30)
    idle = [socket.create_connection(("127.0.0.1", collector.port)) for _ in range(20)]
    try:
        # The 20 are accepted asynchronously: the 21st is refused once they all are.
        refused_after = seconds_until(lambda: exchange(collector.port, _PING + b"\r\n", timeout=1)
                                      .startswith(b"HTTP/1.1 503 "), limit=5)
        answer = exchange(collector.port, _PING + b"\r\n")
    finally:
        for sock in idle:
            sock.close()
    served_after = seconds_until_pong(collector.port, limit=10)
    print(f"\n21st connection: {answer[:40]!r} (after {refused_after} s); /ping 200 {served_after} s after the "
          f"20 closed")
    assert refused_after is not None and b"retry-after: 5" in answer, answer[:200]
    assert served_after is not None
    assert refused(collector, "over_capacity") >= 1
    assert collector.process.poll() is None


def refused(collector, reason: str) -> float:
    return metric(collector, "event_collector_connections_refused_total", reason=reason)


def seconds_until(condition, limit: float) -> float | None:
    """Seconds until `condition()` holds, polled every 0.1 s; None if it did not within `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    return None


def seconds_until_pong(port: int, limit: float) -> float | None:
    return seconds_until(lambda: exchange(port, _PING + b"\r\n", timeout=1).endswith(b"pong"), limit)


def test_a_413_on_a_connection_the_client_closes_reaches_the_client(served):
    body = b"x" * (4 << 20)  # MAX_BODY_BYTES is 1 MiB: refused on its Content-Length, the body never read
    head = (f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.token()}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    answer = exchange(served.port, head + body)
    print(f"\n413 with Connection: close: {answer[:40]!r}")
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


def test_keep_alive_pipelining_and_100_continue_work_and_a_refused_pipelined_request_ends_the_connection(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        for _ in range(2):
            sock.sendall(_PING + b"\r\n")
            answer = b""
            while not answer.endswith(b"pong"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")

        sock.sendall((_PING + b"\r\n") * 3)
        answers = b""
        while answers.count(b"pong") < 3:
            answers += sock.recv(65536)
        assert answers.count(b"HTTP/1.1 200 ") == 3

        body = msgspec.json.encode(event())
        sock.sendall((f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {served.token()}\r\n"
                      f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode())
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while not answer.endswith(b"}"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"status":"created"}')

    # Two requests, then one with too many headers, in one write: the two are answered, then the connection
    # ends (the refusal cannot go in front of their answers).
    too_many = _PING + b"".join(b"X-%d: v\r\n" % n for n in range(101)) + b"\r\n"
    answers = exchange(served.port, (_PING + b"\r\n") * 2 + too_many, timeout=3)
    print(f"\npipelined with a refused third: {answers.count(b'pong')} answered, then closed")
    assert answers.count(b"HTTP/1.1 200 ") == 2 and answers.endswith(b"pong"), answers
