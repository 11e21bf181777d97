"""Sending the run's events at the paced rate, and the ledger of every answer each one got."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import aiohttp

from .arguments import Plan
from .pacing import Pacer

# The event name every verify event carries, so a dashboard can leave them out and an operator find them.
EVENT_NAME = "event-collector-verify"
# Longest wait between resends when the answer gives no Retry-After, and the most a Retry-After is obeyed.
_MAX_BACKOFF_SECONDS = 10.0
_MAX_RETRY_AFTER_SECONDS = 30.0
_ANSWER_BYTES_READ = 64 << 10


@dataclass
class SentEvent:
    log_id: str
    answers: list[int | str] = field(default_factory=list)  # each attempt's status, or its transport error
    acknowledged_at: float | None = None                     # clock time its first 2xx came back


class Ledger:
    """Every event of the run and every answer, as the report counts them."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.events: list[SentEvent] = []
        self.statuses: Counter[int] = Counter()
        self.transport_errors: Counter[str] = Counter()
        self.resent = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def new_event(self) -> SentEvent:
        sent = SentEvent(f"verify-{self.run_id}-{len(self.events)}")
        self.events.append(sent)
        return sent

    def record(self, sent: SentEvent, answer: int | str, at: float) -> None:
        sent.answers.append(answer)
        if isinstance(answer, str):
            self.transport_errors[answer] += 1
            return
        self.statuses[answer] += 1
        if 200 <= answer < 300 and sent.acknowledged_at is None:
            sent.acknowledged_at = at

    def acknowledged(self) -> list[SentEvent]:
        return [sent for sent in self.events if sent.acknowledged_at is not None]


def event_body(plan: Plan, run_id: str, n: int, log_id: str) -> bytes:
    if plan.token is not None:
        body = {"log_id": log_id, "page": "/event-collector-verify", "event": EVENT_NAME, "label": run_id,
                "param": {"verify_run": run_id, "n": str(n)}}
    else:
        body = {"type": "track", "event": EVENT_NAME, "messageId": log_id, "anonymousId": f"verify-{run_id}",
                "properties": {"verify_run": run_id, "n": n}}
    return json.dumps(body, separators=(",", ":")).encode()


def credentials_header(plan: Plan) -> str:
    """The Authorization header that sends (and asks for receipts of) the run's events."""
    if plan.token is not None:
        return f"Bearer {plan.token.strip()}"
    return "Basic " + base64.b64encode(f"{plan.write_key}:".encode()).decode()


def resendable(answer: int | str) -> bool:
    """What an SDK resends: no answer, 408, 429 and 5xx. Any other 4xx would be refused again."""
    return isinstance(answer, str) or answer in (408, 429) or answer >= 500


async def send_all(plan: Plan, ledger: Ledger, session: aiohttp.ClientSession,
                   clock: Callable[[], float] = time.monotonic) -> None:
    """Send plan.events events at plan.rate_per_second; return when each has its last answer."""
    pacer = Pacer(plan.rate_per_second, clock)
    slots = asyncio.Semaphore(plan.concurrency)
    headers = {"Authorization": credentials_header(plan), "Content-Type": "application/json"}
    in_flight: set[asyncio.Task] = set()  # only those not done: a run of a million events keeps no million tasks
    ledger.started_at = clock()
    try:
        for n in range(plan.events):
            await pacer.wait()
            await slots.acquire()  # at most plan.concurrency in flight: the pacer falls behind rather than pile up
            sent = ledger.new_event()
            body = event_body(plan, ledger.run_id, n, sent.log_id)
            task = asyncio.create_task(_deliver(plan, ledger, session, sent, body, headers, slots, clock))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        while in_flight:
            await asyncio.gather(*in_flight)
    finally:
        for task in in_flight:
            task.cancel()
    ledger.finished_at = clock()


async def _deliver(plan: Plan, ledger: Ledger, session: aiohttp.ClientSession, sent: SentEvent, body: bytes,
                   headers: dict[str, str], slots: asyncio.Semaphore, clock: Callable[[], float]) -> None:
    """Send one event (its slot is held already), and resend it up to plan.retries times while resendable."""
    for attempt in range(plan.retries + 1):
        if attempt:
            ledger.resent += 1
            await slots.acquire()
        try:
            answer, retry_after = await _post(session, plan.url + plan.route, body, headers, plan.timeout_seconds)
        finally:
            slots.release()
        ledger.record(sent, answer, clock())
        if attempt == plan.retries or not resendable(answer):
            return
        await asyncio.sleep(retry_after if retry_after is not None else min(0.5 * 2 ** attempt, _MAX_BACKOFF_SECONDS))


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                timeout_seconds: float) -> tuple[int | str, float | None]:
    """(status, Retry-After seconds) of one POST, or (the transport error's name, None)."""
    try:
        async with session.post(url, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as response:
            await response.content.read(_ANSWER_BYTES_READ)  # the status is the answer; a body is not needed
            return response.status, retry_after_seconds(response.headers.get("Retry-After"))
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return type(exc).__name__, None


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After in seconds, bounded; None when absent or not a number of seconds."""
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_SECONDS) if math.isfinite(seconds) else None
