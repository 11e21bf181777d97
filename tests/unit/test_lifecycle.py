import asyncio

from event_collector.lifecycle import _supervise


async def test_a_background_task_that_raises_is_started_again():
    runs = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("a bug")

    await asyncio.wait_for(_supervise("flaky", flaky), 5)
    assert len(runs) == 2


async def test_a_supervised_task_still_stops_when_cancelled():
    async def forever() -> None:
        await asyncio.Event().wait()

    task = _supervise("forever", forever)
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
