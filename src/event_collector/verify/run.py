"""One verify run: send while watching, keep watching until every 2xx'd event is found or the deadline
passes, then report. `verify_command` is what `event-collector verify` runs."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from typing import Callable, TextIO

import aiohttp

from ..exceptions import CheckRefused
from .arguments import Plan, plan_from
from .opensearch_check import OpenSearchCheck
from .receipts_check import ReceiptsCheck
from .report import EXIT_CANNOT_CHECK, Observations, as_json, as_table, figures
from .sender import Ledger, send_all

PROGRESS_INTERVAL_SECONDS = 5.0
_USER_AGENT = "event-collector-verify"


def verify_command(args: argparse.Namespace, parser_error: Callable[[str], None]) -> int:
    plan = plan_from(args, parser_error)
    try:
        ledger, seen = asyncio.run(run(plan))
    except CheckRefused as exc:
        print(f"event-collector verify: {exc}", file=sys.stderr)
        return EXIT_CANNOT_CHECK
    result = figures(plan, ledger, seen)
    print(as_json(result) if plan.json else as_table(result, plan), flush=True)
    return result.exit_code


async def run(plan: Plan, run_id: str | None = None, clock: Callable[[], float] = time.monotonic,
              progress: TextIO | None = None) -> tuple[Ledger, Observations]:
    progress = progress or sys.stderr
    ledger = Ledger(run_id or uuid.uuid4().hex[:12])
    print(f"verify run {ledger.run_id}: ids verify-{ledger.run_id}-0 … -{plan.events - 1}", file=progress, flush=True)
    # Two sessions: a check never waits for a connection behind the events in flight.
    async with _session(plan, plan.concurrency) as sending_session, _session(plan, 4) as checking_session:
        check = (OpenSearchCheck(plan, checking_session, ledger.run_id) if plan.opensearch
                 else ReceiptsCheck(plan, checking_session))
        seen = Observations(check.describe(), check.sees_duplicates)
        sending = asyncio.create_task(send_all(plan, ledger, sending_session, clock))
        interrupted = _interruption()
        try:
            await _watch(plan, ledger, check, seen, sending, interrupted, clock, progress)
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
            ledger.finished_at = ledger.finished_at or clock()
    return ledger, seen


def _interruption() -> asyncio.Event:
    """Set by Ctrl-C: the operator ends a long wait and still gets the figures so far (exit 2 if any event
    answered 2xx was not found yet: too early to call it lost)."""
    interrupted = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted.set)
    return interrupted


def _session(plan: Plan, connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, ssl=None if plan.verify_tls else False)
    return aiohttp.ClientSession(connector=connector, headers={"User-Agent": _USER_AGENT})


async def _watch(plan: Plan, ledger: Ledger, check, seen: Observations, sending: asyncio.Task,
                 interrupted: asyncio.Event, clock: Callable[[], float], progress: TextIO) -> None:
    """Poll the check every poll interval, while sending and after, until every event answered 2xx has been
    found, the deadline after the last send has passed, or the operator interrupts."""
    next_progress = clock() + PROGRESS_INTERVAL_SECONDS
    while True:
        started = clock()
        outstanding = [sent.log_id for sent in ledger.events if sent.log_id not in seen.first_found]
        retry_after = None
        if outstanding:
            result = await check.poll(outstanding)
            seen.take(result, clock())
            retry_after = result.retry_after_seconds
        now = seen.ended_at = clock()
        if sending.done():
            sending.result()  # a failure of the sender itself is a bug to show, not a figure
            if all(sent.log_id in seen.first_found for sent in ledger.acknowledged()):
                return
            if now >= ledger.finished_at + plan.deadline_seconds:
                return
        if now >= next_progress:
            next_progress = now + PROGRESS_INTERVAL_SECONDS
            print(f"verify: sent {len(ledger.events)}/{plan.events}, answered 2xx {len(ledger.acknowledged())}, "
                  f"found {len(seen.first_found)}", file=progress, flush=True)
        pause = max(plan.poll_interval_seconds - (clock() - started), retry_after or 0.0, 0.0)
        try:
            await asyncio.wait_for(interrupted.wait(), pause)
        except asyncio.TimeoutError:
            continue
        seen.interrupted = True
        return
