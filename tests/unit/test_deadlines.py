import asyncio

import pytest

from event_collector.api.body import read_body
from event_collector.api.deadlines import BodyReadDeadlines


async def read(deadlines: BodyReadDeadlines, arrives: asyncio.Event) -> bytes:
    """The app's body read (api/body.py) of a body that comes once `arrives` is set."""
    async def receive() -> dict:
        await arrives.wait()
        return {"type": "http.request", "body": b"body", "more_body": False}

    return await read_body(receive, {}, 1024, deadlines)


async def test_a_read_past_its_deadline_times_out_and_others_do_not():
    deadlines = BodyReadDeadlines(timeout_seconds=0.2)
    sweeper = asyncio.create_task(deadlines.sweep())
    try:
        stalled, arriving = asyncio.Event(), asyncio.Event()
        stalled_read = asyncio.create_task(read(deadlines, stalled))
        prompt_read = asyncio.create_task(read(deadlines, arriving))
        arriving.set()
        assert await asyncio.wait_for(prompt_read, 5) == b"body"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stalled_read, 5)
        assert not stalled_read.cancelled()
    finally:
        sweeper.cancel()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    deadlines = BodyReadDeadlines(timeout_seconds=60)
    reader = asyncio.create_task(read(deadlines, asyncio.Event()))
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert deadlines._deadlines == {}
