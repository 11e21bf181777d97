"""Property-based fuzzing of the ingest routes, against one real collector process and the real OpenSearch.

Generated requests: events with random fields and params (unicode keys and values, some near Lucene's term
limit, nested objects and arrays, numbers of any size, booleans, nulls), truncated JSON, random bytes,
batches as JSON arrays or NDJSON, random bytes in the copied headers and random Authorization values.
They go over raw sockets, so that any header byte can be sent (httpx refuses some).

The invariants: every answer is a 2xx, a 4xx, or a 503 with Retry-After, and comes within the timeout;
every event answered 2xx becomes a document, and none goes to the dead-letter table (an event OpenSearch
would refuse must be refused at the door). Examples are derandomized and bounded: the file runs in well
under a minute.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import itertools
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import TEST_SECRET, CollectorProcess, wait_until

FUZZ = settings(derandomize=True, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
# Long enough for the slowest honest answer on a loaded 2-core machine; a hang takes longer.
REQUEST_TIMEOUT_SECONDS = 20
COPIED_HEADERS = (b"device-uuid", b"app-version", b"os-version", b"user-agent")
# Fixed width: the body's length, on which draws depend, must not change when an example is replayed.
_log_ids = itertools.count()


@pytest.fixture(scope="module")
def served(tmp_path_factory, opensearch):
    collector = CollectorProcess(tmp_path_factory.mktemp("fuzz")).start()
    yield collector
    collector.stop()


# --- the wire ---------------------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def exchange(collector: CollectorProcess, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> Answer:
    """One request on its own connection; the whole answer must come within REQUEST_TIMEOUT_SECONDS."""
    head = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", f"Content-Length: {len(body)}".encode(),
            b"Connection: close", *(name + b": " + value for name, value in headers)]
    deadline = time.monotonic() + REQUEST_TIMEOUT_SECONDS
    received = b""
    with socket.create_connection(("127.0.0.1", collector.port), timeout=REQUEST_TIMEOUT_SECONDS) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        while chunk := _recv(sock):
            received += chunk
            assert time.monotonic() < deadline, f"no whole answer in {REQUEST_TIMEOUT_SECONDS} s: {received[:200]!r}"
    head_bytes, _, answer_body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.split(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 "), f"no HTTP answer: {received[:200]!r}"
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        answer_headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), answer_headers, answer_body)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        # The server may close a refused request's connection before reading all of it; its answer came first.
        return b""
    except TimeoutError:
        raise AssertionError(f"no answer in {REQUEST_TIMEOUT_SECONDS} s") from None


def assert_sane(answer: Answer, request: Any) -> None:
    ok = 200 <= answer.status < 300 or 400 <= answer.status < 500 or (
        answer.status == 503 and b"retry-after" in answer.headers)
    assert ok, f"answered {answer.status} {answer.body[:300]!r} to {str(request)[:600]}"


def token(subject: Any = "fuzz-user", ttl_seconds: int = 3600, secret: str = TEST_SECRET) -> str:
    """An HS256 token; `subject` may be anything JSON can carry, to reach the claim checks."""
    def b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": subject, "iat": int(time.time()), "exp": int(time.time()) + ttl_seconds}
    signing_input = b64url(b'{"alg":"HS256","typ":"JWT"}') + "." + b64url(msgspec.json.encode(claims))
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


VALID_AUTH = [(b"authorization", b"Bearer " + token().encode())]


@dataclass
class Ledger:
    """The log_ids answered 2xx, all of which must be indexed once the fuzzing is over."""

    accepted: set[str] = field(default_factory=set)

    def settle(self, collector: CollectorProcess, opensearch) -> None:
        """Wait until each is indexed or dead-lettered; then no event may be dead-lettered."""
        def placed() -> bool:
            dead = {log_id for log_id, _ in collector.dead_letters()}
            return self.accepted <= set(opensearch.log_id_counts(collector.environment)) | dead

        wait_until(placed, timeout=90, message=f"{len(self.accepted)} events answered 2xx indexed")
        assert collector.dead_letters() == []


# --- what is generated ------------------------------------------------------------------------------------

def mostly(usual: st.SearchStrategy, other: st.SearchStrategy, percent: int = 90) -> st.SearchStrategy:
    """`usual` that often, else `other` (one_of would draw each about as often)."""
    return st.integers(0, 99).flatmap(lambda n: usual if n < percent else other)


# Long strings are built, not drawn character by character (much faster), at lengths around the limits:
# a term of 32,766 bytes, of which 35 are flat_object's, and the 1,024 characters of a string field.
_long_text = st.builds(lambda char, count: char * count,
                       st.sampled_from(["v", ".", "=", "\u00e9", "\u20ac", "\U0001F600", "\\", '"', "\x00"]),
                       st.one_of(st.integers(32_700, 32_770), st.integers(16_360, 16_370), st.integers(1020, 1030),
                                 st.integers(0, 3000)))
_short_text = st.text(max_size=12)
_text = mostly(_short_text, _long_text, 80)
_numbers = st.one_of(st.integers(), st.integers(-(10**1001), 10**1001),
                     st.floats(allow_nan=False, allow_infinity=False),
                     st.sampled_from([int("9" * 1000), -int("9" * 1000), 10**1000]))
_leaf = st.one_of(st.none(), st.booleans(), _numbers, _text)


def _containers(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(children, max_size=4) | st.dictionaries(_text, children, max_size=4)


_json = st.recursive(_leaf, _containers, max_leaves=10)
# A string field: mostly valid (1 to 1,024 characters), else anything JSON has.
_field_value = mostly(st.one_of(st.text(min_size=1, max_size=12), _long_text.map(lambda text: text[:1024] or "x")),
                      st.one_of(_long_text, _leaf, st.lists(_leaf, max_size=2)))


@st.composite
def events(draw) -> dict[str, Any]:
    """A valid-ish event; its log_id is unique (a counter) with a random tail, so a 2xx can be traced."""
    tail = draw(mostly(_short_text, _long_text.map(lambda text: text[:600])))
    sent: dict[str, Any] = {"log_id": f"{next(_log_ids):08d}-{tail}"}
    for name in ("page", "event"):
        if draw(mostly(st.just(True), st.just(False), 97)):
            sent[name] = draw(_field_value)
    for name in ("label", "target", "section"):
        if draw(st.booleans()):
            sent[name] = draw(_field_value)
    if draw(mostly(st.just(True), st.just(False), 80)):
        sent["param"] = draw(mostly(st.dictionaries(_text, _json, max_size=6), _json))
    if draw(mostly(st.just(False), st.just(True), 80)):
        sent[draw(_short_text)] = draw(_json)
    return sent


@st.composite
def mangled(draw, body: bytes) -> bytes:
    """The body as is (mostly), or cut short, or with a byte changed to one that may not be UTF-8, or with a
    field nested up to thousands of levels deep (past what msgspec decodes), or random bytes."""
    how = draw(mostly(st.just("as is"), st.sampled_from(["cut", "byte", "deep", "deep", "random"]), 65))
    if how == "cut" and body:
        return body[:draw(st.integers(0, len(body) - 1))]
    if how == "byte" and body:
        position = draw(st.integers(0, len(body) - 1))
        return body[:position] + bytes([draw(st.integers(0, 255))]) + body[position + 1:]
    if how == "deep" and body.endswith(b"}"):
        name = draw(mostly(st.sampled_from([b"param", b"junk", b"\xff\xfe"]),
                           st.binary(max_size=8).map(lambda raw: raw.replace(b'"', b"").replace(b"\\", b""))))
        levels = draw(mostly(st.integers(900, 3000), st.integers(0, 900), 70))
        opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return body[:-1] + b',"' + name + b'":' + opening * levels + b"1" + closing * levels + b"}"
    if how == "random":
        return draw(st.binary(max_size=300))
    return body


# Header values: any bytes an HTTP/1.1 header line can carry (no CR or LF, which would end it).
_header_value = st.one_of(
    st.binary(max_size=40).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b"")),
    st.text(max_size=20).map(str.encode),
    st.builds(lambda char, count: char * count, st.sampled_from([b"a", b"\xe9", "\u20ac".encode()]),
              st.integers(1000, 1100)),
)


@st.composite
def copied_headers(draw) -> list[tuple[bytes, bytes]]:
    return [(name, draw(_header_value)) for name in COPIED_HEADERS if draw(st.booleans())]


@st.composite
def authorization(draw) -> list[tuple[bytes, bytes]]:
    odd = st.sampled_from(["subject", "expired", "other key", "junk", "absent", "scheme"])
    kind = draw(mostly(st.just("valid"), odd, 60))
    if kind == "absent":
        return []
    if kind == "subject":
        value = b"Bearer " + token(draw(st.one_of(_text, _leaf))).encode()
    elif kind == "expired":
        value = b"Bearer " + token(ttl_seconds=-10).encode()
    elif kind == "other key":
        value = b"Bearer " + token(secret="not-the-secret").encode()
    elif kind == "junk":
        value = b"Bearer " + draw(_header_value)
    elif kind == "scheme":
        value = draw(st.sampled_from([b"bearer ", b"Basic ", b"Bearer  ", b"", b"Token "])) + token().encode()
    else:
        value = VALID_AUTH[0][1]
    return [(b"authorization", value.replace(b"\r", b"").replace(b"\n", b""))]


class _Logged(msgspec.Struct):
    log_id: str


def log_id_of(item: bytes) -> str:
    """The log_id of an accepted event, read as the collector reads it: the rest is skipped unchecked (an
    unknown field may hold bytes that are not UTF-8; it is dropped all the same)."""
    return msgspec.json.decode(item, type=_Logged).log_id


# --- the properties ---------------------------------------------------------------------------------------

def test_fuzzed_events_get_a_sane_answer_and_every_2xx_is_indexed(served, opensearch):
    ledger = Ledger()

    @settings(FUZZ, max_examples=250)
    @given(st.data())
    def one_event(data):
        sent = data.draw(events())
        body = data.draw(mangled(msgspec.json.encode(sent)))
        answer = exchange(served, "/events", body, VALID_AUTH)
        assert_sane(answer, body)
        if answer.status == 200:
            # A mangled body answered 200 must still be an event: the one it names is what must be indexed.
            ledger.accepted.add(log_id_of(body))

    one_event()
    assert ledger.accepted, "no fuzzed event was accepted: the generator is broken"
    ledger.settle(served, opensearch)


def test_fuzzed_batches_get_a_sane_answer_and_every_accepted_event_is_indexed(served, opensearch):
    ledger = Ledger()

    @settings(FUZZ, max_examples=80)
    @given(st.data())
    def one_batch(data):
        sent = data.draw(st.lists(events(), max_size=8))
        ndjson = data.draw(st.booleans())
        items = [msgspec.json.encode(item) for item in sent]
        body = b"\n".join(items) if ndjson else b"[" + b",".join(items) + b"]"
        body = data.draw(mangled(body))
        headers = [*VALID_AUTH, (b"content-type", b"application/x-ndjson" if ndjson else b"application/json")]
        if data.draw(st.booleans()):
            body = gzip.compress(body)
            headers.append((b"content-encoding", b"gzip"))
        answer = exchange(served, "/events/batch", body, headers)
        assert_sane(answer, sent)
        if answer.status == 200:
            raw = gzip.decompress(body) if (b"content-encoding", b"gzip") in headers else body
            items = raw.split(b"\n") if ndjson else msgspec.json.decode(raw, type=list[msgspec.Raw])
            rejected = {rejection["index"] for rejection in json.loads(answer.body)["rejected"]}
            accepted = [item for position, item in enumerate(items)
                        if position not in rejected and bytes(item).strip()]
            assert len(accepted) == json.loads(answer.body)["accepted"], answer.body[:300]
            ledger.accepted.update(log_id_of(item) for item in accepted)

    one_batch()
    assert ledger.accepted, "no fuzzed batch event was accepted: the generator is broken"
    ledger.settle(served, opensearch)


def test_fuzzed_headers_and_authorization_get_a_sane_answer_and_headers_are_kept_faithfully(served, opensearch):
    ledger = Ledger()
    expected: dict[str, dict[str, str]] = {}

    @settings(FUZZ, max_examples=150)
    @given(copied_headers(), authorization())
    def one_request(headers, auth):
        log_id = f"{next(_log_ids):08d}-headers"
        body = msgspec.json.encode({"log_id": log_id, "page": "/p", "event": "e"})
        answer = exchange(served, "/events", body, [*auth, *headers])
        assert_sane(answer, (headers, auth))
        if answer.status == 200:
            ledger.accepted.add(log_id)
            expected[log_id] = {name.decode().replace("-", "_"): _as_text(value.strip(b" \t"))
                                for name, value in headers}

    one_request()
    assert ledger.accepted, "no fuzzed request was accepted: the generator is broken"
    ledger.settle(served, opensearch)
    for log_id, headers in expected.items():
        [hit] = opensearch.search(served.environment, {"term": {"log_id": log_id}})
        kept = {name: hit["_source"][name] for name in headers}
        assert kept == headers, log_id


def _as_text(value: bytes) -> str:
    """What the collector promises for a header value: its UTF-8 text, or latin-1 when it is not UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")
