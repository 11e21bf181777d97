"""verify's sending and its receipts mode against a small local HTTP stub of the collector: resends, what is
not resent, the receipts contract (chunks, 429, states, 404). Real collectors: tests/integration/test_verify.py."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys

import pytest
from aiohttp import web

from event_collector.verify.arguments import add_verify_parser, plan_from
from event_collector.verify.report import Observations, as_json, as_table, figures
from event_collector.verify.run import run
from event_collector.verify.sender import Ledger

TOKEN = "header.payload.signature"


class StubCollector:
    """/events, /v1/track and /v1/receipts as the contract says, with answers a test scripts."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict, str]] = []    # (path, body, Authorization)
        self.first_answer = 200                          # the first attempt of each id; later ones get 200
        self.receipt_requests: list[tuple[list[str], str]] = []
        self.receipts: dict[str, dict] = {}              # id -> receipt; the rest get default_receipt
        self.default_receipt = {"state": "indexed", "index": "events_x"}
        self.receipts_refusals: list[web.Response] = []  # answered, in turn, before any receipt
        self.has_receipts = True

    async def events(self, request: web.Request) -> web.Response:
        body = await request.json()
        log_id = body.get("log_id") or body.get("messageId")
        first = not any(sent_id == log_id for _, sent, _ in self.posted
                        for sent_id in (sent.get("log_id") or sent.get("messageId"),))
        self.posted.append((request.path, body, request.headers.get("Authorization", "")))
        status = self.first_answer if first else 200
        return web.json_response({}, status=status, headers={"Retry-After": "0"} if status == 503 else None)

    async def receipts_route(self, request: web.Request) -> web.Response:
        if not self.has_receipts:
            return web.json_response({"error": "not found"}, status=404)
        ids = (await request.json())["ids"]
        self.receipt_requests.append((ids, request.headers.get("Authorization", "")))
        if self.receipts_refusals:
            return self.receipts_refusals.pop(0)
        return web.json_response({"receipts": {i: self.receipts.get(i, self.default_receipt)
                                               for i in ids}})


@pytest.fixture
async def stub():
    collector = StubCollector()
    app = web.Application()
    app.router.add_post("/events", collector.events)
    app.router.add_post("/v1/track", collector.events)
    app.router.add_post("/v1/receipts", collector.receipts_route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    collector.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield collector
    await runner.cleanup()


def plan(stub: StubCollector, *options: str):
    parser = add_verify_parser(argparse.ArgumentParser().add_subparsers())
    args = parser.parse_args([stub.url, "--rate", "2000", "--poll-interval", "0.05", *options])
    return plan_from(args, parser.error)


async def test_a_resend_carries_the_same_id_and_is_counted(stub):
    stub.first_answer = 503
    verify_plan = plan(stub, "--events", "20", "--token", TOKEN, "--retries", "2")
    ledger, seen = await run(verify_plan)
    result = figures(verify_plan, ledger, seen)
    ids = [body["log_id"] for _, body, _ in stub.posted]
    assert len(ids) == 40 and len(set(ids)) == 20  # each id twice: the 503, then the 2xx
    assert result.statuses == {"200": 20, "503": 20} and result.resent == 20 and result.requests == 40
    assert result.acknowledged == result.indexed == 20 and result.exit_code == 0


async def test_nothing_is_resent_by_default(stub):
    stub.first_answer = 503
    verify_plan = plan(stub, "--events", "10", "--token", TOKEN, "--deadline", "0.2")
    result = figures(verify_plan, *await run(verify_plan))
    assert len(stub.posted) == 10
    assert result.statuses == {"503": 10} and result.acknowledged == 0 and result.exit_code == 2


async def test_a_refusal_other_than_408_429_5xx_is_not_resent(stub):
    stub.first_answer = 400
    verify_plan = plan(stub, "--events", "5", "--token", TOKEN, "--retries", "3", "--deadline", "0.2")
    result = figures(verify_plan, *await run(verify_plan))
    assert len(stub.posted) == 5 and result.statuses == {"400": 5} and result.resent == 0


async def test_the_events_say_they_come_from_verify(stub):
    verify_plan = plan(stub, "--events", "3", "--write-key", "wk_web")
    ledger, _ = await run(verify_plan, run_id="abc123")
    paths = {path for path, _, _ in stub.posted}
    assert paths == {"/v1/track"}
    bodies = sorted((body for _, body, _ in stub.posted), key=lambda body: body["messageId"])
    assert [body["messageId"] for body in bodies] == ["verify-abc123-0", "verify-abc123-1", "verify-abc123-2"]
    assert {body["event"] for body in bodies} == {"event-collector-verify"}
    assert {body["type"] for body in bodies} == {"track"}
    assert {auth for _, _, auth in stub.posted} == {"Basic " + base64.b64encode(b"wk_web:").decode()}
    # The receipts were asked with the key that sent the events.
    assert {auth for _, auth in stub.receipt_requests} == {"Basic " + base64.b64encode(b"wk_web:").decode()}


async def test_receipts_mode_counts_what_is_not_indexed_by_the_deadline_as_lost_and_says_why(stub):
    verify_plan = plan(stub, "--events", "10", "--token", TOKEN, "--deadline", "0.3")
    states = {1: {"state": "pending", "attempts": 3, "next_attempt_at": "2026-12-04T10:00:00Z", "last_error": "x"},
              2: {"state": "dead_lettered", "reason": "mapper_parsing_exception", "failed_at": "2026-12-04T10:00:00Z"},
              3: {"state": "unknown"}, 4: {"state": "in_flight", "accepted_at": "2026-12-04T10:00:00Z"}}
    run_id = "deadbeef0001"
    stub.receipts = {f"verify-{run_id}-{n}": receipt for n, receipt in states.items()}
    ledger, seen = await run(verify_plan, run_id=run_id)
    result = figures(verify_plan, ledger, seen)
    assert result.acknowledged == 10 and result.indexed == 6 and result.lost == 4
    assert result.lost_states == {"pending": 1, "dead_lettered": 1, "unknown": 1, "in_flight": 1}
    assert result.duplicated is None and result.exit_code == 1
    assert {auth for _, auth in stub.receipt_requests} == {f"Bearer {TOKEN}"}
    # Once indexed, an id is not asked about again.
    later = [ids for ids, _ in stub.receipt_requests[1:]]
    assert all(set(ids) <= set(stub.receipts) for ids in later)
    table = as_table(result, verify_plan)
    assert "receipts cannot see duplicates" in table and "last receipts: pending 1" in table


async def test_receipts_are_asked_1000_ids_at_a_time(stub):
    verify_plan = plan(stub, "--events", "2500", "--token", TOKEN, "--rate", "100000", "--poll-interval", "5")
    ledger, seen = await run(verify_plan)
    assert figures(verify_plan, ledger, seen).indexed == 2500
    assert max(len(ids) for ids, _ in stub.receipt_requests) == 1000


async def test_a_429_from_receipts_is_obeyed_then_asked_again(stub):
    stub.receipts_refusals = [web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": "1"})]
    verify_plan = plan(stub, "--events", "5", "--token", TOKEN, "--rate", "100000")
    ledger, seen = await run(verify_plan)
    result = figures(verify_plan, ledger, seen)
    assert result.exit_code == 0 and result.failed_polls == 1 and "429" in result.last_poll_error
    assert len(stub.receipt_requests) == 2
    assert result.latency["p50"] >= 1.0  # found by the poll after the Retry-After, not before


async def test_a_collector_without_receipts_stops_the_run_with_a_hint(stub):
    from event_collector.exceptions import CheckRefused

    stub.has_receipts = False
    verify_plan = plan(stub, "--events", "3", "--token", TOKEN)
    with pytest.raises(CheckRefused, match="no receipts route.*--opensearch"):
        await run(verify_plan)


def test_the_json_has_the_figures_an_operator_scripts_against():
    parser = add_verify_parser(argparse.ArgumentParser().add_subparsers())
    args = parser.parse_args(["http://collector", "--token", TOKEN, "--opensearch", "http://search:9200", "--json"])
    verify_plan = plan_from(args, parser.error)
    ledger = Ledger("r1")
    for n in range(3):
        ledger.record(ledger.new_event(), 200, at=float(n))
    ledger.started_at, ledger.finished_at = 0.0, 2.0
    seen = Observations("OpenSearch", sees_duplicates=True, polls=2,
                        first_found={"verify-r1-0": 1.0, "verify-r1-1": 3.0},
                        documents={"verify-r1-0": 1, "verify-r1-1": 3})
    data = json.loads(as_json(figures(verify_plan, ledger, seen)))
    assert {key: data[key] for key in ("sent", "acknowledged", "indexed", "lost", "duplicated")} == {
        "sent": 3, "acknowledged": 3, "indexed": 2, "lost": 1, "duplicated": 2}
    assert data["lost_ids"] == ["verify-r1-2"] and data["duplicated_ids"] == ["verify-r1-1"]
    assert data["latency"]["p50"] == 1.0 and data["latency"]["max"] == 2.0 and data["statuses"] == {"200": 3}
    assert data["exit_code"] == 1


async def test_ctrl_c_ends_the_wait_with_the_figures_so_far_and_exit_2(stub):
    from support import wait_until_async

    stub.default_receipt = {"state": "pending", "attempts": 1}
    verify = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "event_collector.cli", "verify", stub.url, "--token", TOKEN, "--events", "5",
        "--rate", "100", "--deadline", "600", "--poll-interval", "0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    await wait_until_async(lambda: len(stub.receipt_requests) >= 3, timeout=30, message="verify waiting on receipts")
    verify.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(verify.communicate(), 30)
    assert verify.returncode == 2, out + err
    assert b"INTERRUPTED: 5 events answered 2xx not found yet" in out and b"answered 2xx      5" in out


async def test_an_oversized_answer_is_not_read_and_counts_as_a_failed_poll(stub, monkeypatch):
    from event_collector.verify import asking

    monkeypatch.setattr(asking, "MAX_ANSWER_BYTES", 2000)
    stub.default_receipt = {"state": "indexed", "index": "x" * 500}
    verify_plan = plan(stub, "--events", "10", "--token", TOKEN, "--deadline", "0.3")
    result = figures(verify_plan, *await run(verify_plan))
    assert result.polls == result.failed_polls >= 1 and "receipts answered more than" in result.last_poll_error
    assert result.indexed == 0 and result.exit_code == 2  # never a loss it could not see
