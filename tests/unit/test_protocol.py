"""api/protocol.py on a fake transport: where the head limit falls, byte for byte, and the open-file cap
(api/connection_limits.py).
The same behaviour against a real process and real sockets: tests/security/test_connections.py."""

import asyncio
import logging
import types

import pytest

from event_collector.api import connection_limits
from fake_connection import HEAD_LIMIT, answered, connection


def head_of(size: int) -> bytes:
    """A complete GET head of exactly `size` bytes, its padding spread over headers under the line limit."""
    start, end = b"GET /ping HTTP/1.1\r\nHost: x\r\n", b"\r\n"
    padding = size - len(start) - len(end)
    lines = []
    while padding > 0:
        line_size = min(padding, 400)
        assert line_size >= 6, "no room for one more header"
        lines.append(b"X-P: " + b"p" * (line_size - 7) + b"\r\n")
        padding -= line_size
    head = start + b"".join(lines) + end
    assert len(head) == size
    return head


@pytest.mark.parametrize("chunk_size", [1, 100, HEAD_LIMIT, 4096])
async def test_a_head_of_max_header_bytes_passes_and_one_byte_more_is_refused(chunk_size):
    for size, status in ((HEAD_LIMIT, b"200"), (HEAD_LIMIT + 1, b"431")):
        made, transport = connection()
        head = head_of(size)
        for start in range(0, len(head), chunk_size):
            made.data_received(head[start:start + chunk_size])
        assert (await answered(transport)).startswith(b"HTTP/1.1 " + status), (size, transport.written)
    # The refused connection is closed the lingering way: write side shut, what follows read and dropped.
    assert transport.write_side_shut and not transport.closed
    made.data_received(b"more of the same head" * 100)
    assert transport.written.count(b"HTTP/1.1") == 1


async def test_a_read_holding_a_small_head_a_large_body_and_a_second_request_is_not_taken_for_a_large_head():
    made, transport = connection()
    body = b"b" * (3 * HEAD_LIMIT)
    first = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    made.data_received(first + head_of(200))
    for _ in range(100):
        if transport.written.count(b"HTTP/1.1 200") == 2:
            break
        await asyncio.sleep(0)
    assert transport.written.count(b"HTTP/1.1 200") == 2, transport.written


@pytest.mark.parametrize("head, status", [
    (b"GET /" + b"u" * 600 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
    (b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 600 + b"\r\n\r\n", b"431"),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(11)) + b"\r\n", b"431"),
])
async def test_a_long_request_line_a_long_header_line_or_too_many_headers_are_refused(head, status):
    made, transport = connection()
    made.data_received(head)
    assert (await answered(transport)).startswith(b"HTTP/1.1 " + status)


def test_the_open_file_limit_is_raised_to_the_hard_limit_and_the_cap_lowered_to_fit(monkeypatch, caplog):
    limits = {"now": (256, 4096)}
    monkeypatch.setattr(connection_limits.resource, "getrlimit", lambda which: limits["now"])
    monkeypatch.setattr(connection_limits.resource, "setrlimit", lambda which, values: limits.update(now=values))
    with caplog.at_level(logging.WARNING, logger=connection_limits.__name__):
        assert connection_limits.connection_cap(10_000) == 4096 - connection_limits.FILE_DESCRIPTOR_RESERVE
    assert limits["now"] == (4096, 4096)
    assert "leaves room for 3968 connections, not MAX_CONNECTIONS=10000" in caplog.text

    caplog.clear()
    limits["now"] = (1024, 1024)
    assert connection_limits.connection_cap(100) == 100
    assert caplog.text == ""


class RecordingFastPath:
    """Stands in for FastIngest: answers 200 at once and records the bodies it was handed."""

    collector = types.SimpleNamespace(accepting=True)
    body_read_timeout_seconds = 10.0

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def handle(self, headers, head, peer, body, done) -> None:
        assert head == dict(headers)
        self.bodies.append(body)
        done((200, [(b"content-length", b"4")], b"fast"))


@pytest.mark.parametrize(("extra", "fast"), [
    (b"", True),
    (b"Content-Encoding: identity\r\n", False),
    (b"Origin: https://example.com\r\n", False),
    (b"Expect: 100-continue\r\n", False),
])
async def test_the_headers_noted_as_they_arrive_decide_the_fast_path(extra, fast):
    made, transport = connection()
    made.fast = recording = RecordingFastPath()
    for _ in range(2):  # what one head noted is forgotten by the next
        transport.written = b""
        made.data_received(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + extra + b"\r\n{}")
        written = await answered(transport)
        assert written.endswith(b"fast" if fast else b"ok"), written
        made.data_received(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        assert transport.written.endswith(b"fast"), transport.written
    assert recording.bodies == [b"{}"] * (4 if fast else 2)
    # The scope is built only for the app's requests, as uvicorn built it.
    if fast:
        assert made.scope is None
    else:
        assert made.scope["method"] == "POST" and made.scope["path"] == "/events" and made.scope["headers"]


@pytest.mark.parametrize(("version", "header", "fast"), [
    (b"1.1", b"", True),
    (b"1.1", b"Connection: keep-alive\r\n", True),
    (b"1.0", b"", False),
    (b"1.0", b"Connection: keep-alive\r\n", False),
])
async def test_only_http_1_1_takes_the_fast_path_whatever_its_connection_header(version, header, fast):
    made, transport = connection()
    made.fast = recording = RecordingFastPath()
    made.data_received(b"POST /events HTTP/" + version + b"\r\nHost: x\r\nContent-Length: 2\r\n" + header
                       + b"\r\n{}")
    written = await answered(transport)
    assert written.endswith(b"fast" if fast else b"ok"), written
    assert recording.bodies == ([b"{}"] if fast else [])


@pytest.mark.parametrize(("extra", "fast"), [
    (b"X-Trace: a\r\nX-Trace: b\r\n", True),  # a repeated name of no concern to the fast path
    (b"EXPECT: 100-continue\r\nexpect: 100-continue\r\n", False),
])
async def test_a_repeated_header_decides_as_the_last_of_its_name(extra, fast):
    made, transport = connection()
    made.fast = recording = RecordingFastPath()
    made.data_received(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n" + extra + b"\r\n{}")
    written = await answered(transport)
    assert written.endswith(b"fast" if fast else b"ok"), written
    assert recording.bodies == ([b"{}"] if fast else [])


async def test_a_content_length_sent_twice_never_takes_the_fast_path():
    made, transport = connection()
    made.fast = recording = RecordingFastPath()
    made.data_received(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}")
    written = await answered(transport)
    assert not written.endswith(b"fast"), written
    assert recording.bodies == []
