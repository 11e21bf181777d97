import asyncio

import pytest

from event_collector.api.deadlines import BodyReadDeadlines


async def read(deadlines: BodyReadDeadlines, arrives: asyncio.Event) -> str:
    """The shape of the app's body read: register, wait, turn an expired deadline into TimeoutError."""
    task = asyncio.current_task()
    deadlines.start(task)
    try:
        await arrives.wait()
        return "body"
    except asyncio.CancelledError:
        if deadlines.expired(task):
            raise TimeoutError from None
        raise
    finally:
        deadlines.stop(task)


async def test_a_read_past_its_deadline_times_out_and_others_do_not():
    deadlines = BodyReadDeadlines(timeout_seconds=0.2)
    sweeper = asyncio.create_task(deadlines.sweep())
    try:
        stalled, arriving = asyncio.Event(), asyncio.Event()
        stalled_read = asyncio.create_task(read(deadlines, stalled))
        prompt_read = asyncio.create_task(read(deadlines, arriving))
        arriving.set()
        assert await asyncio.wait_for(prompt_read, 5) == "body"
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
