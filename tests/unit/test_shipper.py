"""The shipper and its senders against a transport seam (shipper/transport.py), with no pending store at all:
the real client, template guard, shipper, sender and breaker run; only the network is a function from a
request to an answer, in the manner of httpx's MockTransport. What they hand up is an Outcome."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

import msgspec
import pytest

from event_collector.buffer import Buffer
from event_collector.envelope import Envelope
from event_collector.outcomes import Outcome
from event_collector.retry import Breaker
from event_collector.shipper.batcher import Batcher
from event_collector.shipper.client import OpenSearchClient
from event_collector.shipper.concurrency import AdaptiveConcurrency
from event_collector.shipper.sender import Sender
from event_collector.shipper.template import TemplateGuard
from event_collector.shipper.worker import Shipper, Verdict


@dataclass
class Request:
    method: str
    url: str
    body: bytes | None

    @property
    def bulk_ids(self) -> list[str]:
        """The `_id` of every create action of a _bulk body."""
        lines = (self.body or b"").split(b"\n")
        return [msgspec.json.decode(line)["create"]["_id"] for line in lines[0::2] if line]


Answer = tuple[int, dict | str] | BaseException


class MockTransport:
    """Answers each request with `handler(request)`: a (status, JSON body or text) pair, or an exception to
    raise as the network would. Template requests are answered 200 unless the handler wants them."""

    def __init__(self, handler: Callable[[Request], Answer]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def send(self, method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        request = Request(method, url, body)
        self.requests.append(request)
        answer = self.handler(request)
        if isinstance(answer, BaseException):
            raise answer
        status, payload = answer
        return status, payload.encode() if isinstance(payload, str) else msgspec.json.encode(payload)

    @property
    def bulks(self) -> list[Request]:
        return [r for r in self.requests if "/_bulk" in r.url]


def bulk_answer(*statuses: int, error_type: str = "mapper_parsing_exception") -> tuple[int, dict]:
    items = [{"create": {"status": s} if s < 300 else {"status": s, "error": {"type": error_type, "reason": "no"}}}
             for s in statuses]
    return 200, {"errors": any(s >= 300 for s in statuses), "items": items}


def answer_bulks(bulk: Callable[[Request], Answer]) -> Callable[[Request], Answer]:
    return lambda request: bulk(request) if "/_bulk" in request.url else (200, {"acknowledged": True})


def envelopes(n: int, start: int = 0) -> list[Envelope]:
    return [Envelope(f"events_test_2026-12-{i % 2 + 1:02d}", f"id-{i}", b'{"n":%d}' % i, 0.0)
            for i in range(start, start + n)]


def shipper_over(transport: MockTransport, nodes: str = "http://node-a:9200") -> tuple[Shipper, OpenSearchClient]:
    client = OpenSearchClient(nodes, timeout_seconds=5, transport=transport)
    return Shipper(client, TemplateGuard(client, "test")), client


async def test_each_event_of_a_settled_batch_is_handed_up_by_what_opensearch_answered_for_it():
    transport = MockTransport(answer_bulks(lambda r: bulk_answer(201, 409, 429, 503, 400)))
    shipper, _ = shipper_over(transport)
    batch = envelopes(5)
    attempt = await shipper.ship(batch)
    assert attempt.verdict is Verdict.SETTLED
    assert attempt.outcome is not None
    assert [e.log_id for e in attempt.outcome.delivered] == ["id-0", "id-1"]  # 409: already indexed
    assert [f.envelope.log_id for f in attempt.outcome.retry] == ["id-2", "id-3"]
    assert [f.envelope.log_id for f in attempt.outcome.rejected] == ["id-4"]
    assert "mapper_parsing_exception" in attempt.outcome.rejected[0].reason
    assert attempt.pushback and attempt.latency is not None  # items to retry: OpenSearch pushed back
    # The template went first, then one _bulk of create actions whose ids are the events' log_ids.
    assert [r.method for r in transport.requests][0] == "PUT" and "_index_template" in transport.requests[0].url
    assert [r.bulk_ids for r in transport.bulks] == [[e.log_id for e in batch]]


@pytest.mark.parametrize("answer, reason", [
    (ConnectionRefusedError(111, "Connection refused"), "OpenSearch unreachable"),
    (asyncio.TimeoutError(), "no answer within 5 s (OPEN_SEARCH_TIMEOUT_SECONDS)"),
    ((503, {"error": "busy"}), "OpenSearch answered 503"),
    ((401, {"error": "who"}), "OPEN_SEARCH_USERNAME"),
    ((400, "<html>No required SSL certificate was sent</html>"), "a proxy in front of OpenSearch refused"),
])
async def test_a_request_opensearch_did_not_take_pauses_with_a_reason_and_settles_nothing(answer, reason):
    shipper, _ = shipper_over(MockTransport(answer_bulks(lambda r: answer)))
    attempt = await shipper.ship(envelopes(3))
    assert (attempt.verdict, attempt.outcome, attempt.pushback) == (Verdict.PAUSED, None, True)
    assert reason in attempt.reason


async def test_a_413_is_too_large_not_a_pause_and_settles_nothing():
    shipper, _ = shipper_over(MockTransport(answer_bulks(lambda r: (413, "Request Entity Too Large"))))
    attempt = await shipper.ship(envelopes(4))
    assert (attempt.verdict, attempt.outcome, attempt.pushback) == (Verdict.TOO_LARGE, None, False)
    assert "http.max_content_length" in attempt.reason


async def test_a_node_that_refuses_is_set_aside_and_the_same_request_goes_to_the_next():
    def answer(request: Request) -> Answer:
        if request.url.startswith("http://node-a"):
            return ConnectionResetError(104, "Connection reset by peer")
        return bulk_answer(201, 201) if "/_bulk" in request.url else (200, {"acknowledged": True})

    transport = MockTransport(answer)
    shipper, client = shipper_over(transport, "http://node-a:9200,http://node-b:9200")
    attempt = await shipper.ship(envelopes(2))
    assert attempt.outcome is not None and len(attempt.outcome.delivered) == 2
    # The template's PUT met node-a first, then went to node-b; the bulk went straight to node-b.
    assert [r.url.split("/")[2] for r in transport.requests[:2]] == ["node-a:9200", "node-b:9200"]
    assert [r.url.split("/")[2] for r in transport.bulks] == ["node-b:9200"]
    assert [node.label for node in client.nodes.candidates()] == ["http://node-b:9200"]


async def test_a_template_opensearch_cannot_take_holds_the_batch_back():
    transport = MockTransport(lambda request: (503, {"error": "no master"}))
    shipper, _ = shipper_over(transport)
    attempt = await shipper.ship(envelopes(2))
    assert attempt.verdict is Verdict.PAUSED and "index template" in attempt.reason
    assert transport.bulks == []  # no index is created without its mapping


class RecordingPolicy:
    """Stands where the Collector's DeliveryPolicy stands: takes every outcome a sender hands up."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    async def apply(self, outcome: Outcome) -> bool:
        self.outcomes.append(outcome)
        return False


def sender_over(transport: MockTransport, buffer: Buffer) -> tuple[Sender, RecordingPolicy, Breaker]:
    shipper, _ = shipper_over(transport)
    breaker = Breaker(base_seconds=0.01, max_seconds=0.02)
    batcher = Batcher(buffer, 1, 10.0, 0.0, AdaptiveConcurrency(1, adaptive=False))
    policy = RecordingPolicy()
    return Sender(batcher, shipper, breaker, buffer, policy), policy, breaker


async def test_a_sender_splits_a_batch_refused_for_its_size_and_hands_up_each_half():
    def bulk(request: Request) -> Answer:
        ids = request.bulk_ids
        return (413, "too large") if len(ids) > 2 else bulk_answer(*[201] * len(ids))

    buffer = Buffer(100, 100, 10 * 1024 * 1024)
    transport = MockTransport(answer_bulks(bulk))
    sender, policy, _ = sender_over(transport, buffer)
    await sender.deliver(envelopes(4))
    assert [[e.log_id for e in o.delivered] for o in policy.outcomes] == [["id-0", "id-1"], ["id-2", "id-3"]]
    assert buffer.batch_max_bytes < 10 * 1024 * 1024  # later batches are cut smaller
    assert sender.in_flight == []


async def test_a_sender_holds_its_batch_through_an_outage_and_hands_it_up_once_opensearch_answers():
    answers = iter([ConnectionRefusedError(111, "refused"), (503, {"error": "starting"}), bulk_answer(201, 201)])
    transport = MockTransport(answer_bulks(lambda request: next(answers)))
    sender, policy, breaker = sender_over(transport, Buffer(100, 100, 1 << 20))
    await sender.deliver(envelopes(2))
    assert len(transport.bulks) == 3
    assert [[e.log_id for e in o.delivered] for o in policy.outcomes] == [["id-0", "id-1"]]
    assert not breaker.is_open


async def test_a_sender_stopped_by_a_bug_hands_its_batch_up_as_held_with_no_attempt_counted():
    def bulk(request: Request) -> Answer:
        raise RuntimeError("a bug in the shipper")

    buffer = Buffer(100, 100, 1 << 20)
    sender, policy, _ = sender_over(MockTransport(answer_bulks(bulk)), buffer)
    buffer.offer_many(envelopes(3))
    buffer.close()
    run = asyncio.create_task(sender.run())
    await asyncio.wait_for(asyncio.gather(sender._batcher.run(), run), timeout=10)
    assert [[f.envelope.log_id for f in o.held] for o in policy.outcomes] == [["id-0", "id-1", "id-2"]]
    assert policy.outcomes[0].retry == [] and policy.outcomes[0].delivered == []


async def test_each_family_of_indices_gets_its_template_once_before_its_first_bulk():
    transport = MockTransport(answer_bulks(lambda r: bulk_answer(*[201] * len(r.bulk_ids))))
    shipper, _ = shipper_over(transport)
    source = [Envelope("events_web_test_2026-12", f"s-{i}", b"{}", 0.0) for i in range(2)]
    await shipper.ship(envelopes(2) + source)
    await shipper.ship(source + envelopes(2, start=5))
    templates = [r.url.rpartition("/")[2] for r in transport.requests if "_index_template" in r.url]
    assert templates == ["events_test", "events_web_test"]
    put = next(r for r in transport.requests if r.url.endswith("/_index_template/events_web_test"))
    assert msgspec.json.decode(put.body)["index_patterns"] == ["events_web_test_*"]
