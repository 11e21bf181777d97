"""fastpath.step: a coroutine run to its end without a task, as the fast path runs Collector.accept."""

import asyncio

import pytest

from event_collector.api.fastpath import step


def run_stepped(coroutine_function, resolve=None):
    """Step `coroutine_function(future)` from inside a running loop; return what `finished` received."""
    outcome: dict = {}

    async def main():
        future = asyncio.get_running_loop().create_future()
        done = asyncio.Event()

        def finished(result, exc):
            outcome.update(result=result, exc=exc, inside_step=not done.is_set())
            done.set()

        step(coroutine_function(future), finished)
        outcome["finished_at_once"] = done.is_set()
        if resolve is not None:
            resolve(future)
        await asyncio.wait_for(done.wait(), 5)
        assert asyncio.current_task() is not None and len(asyncio.all_tasks()) == 1  # no task was made

    asyncio.run(main())
    return outcome


def test_a_coroutine_that_awaits_nothing_finishes_within_the_call():
    async def at_once(future):
        return "created"

    outcome = run_stepped(at_once)
    assert outcome["finished_at_once"] and outcome["result"] == "created" and outcome["exc"] is None


def test_a_coroutine_waiting_on_a_future_resumes_from_its_done_callback_with_its_result():
    async def waits(future):
        value = await future
        await asyncio.sleep(0)  # a bare yield on the way
        return value + "!"

    outcome = run_stepped(waits, resolve=lambda future: future.set_result("pending"))
    assert not outcome["finished_at_once"] and outcome["result"] == "pending!"


@pytest.mark.parametrize("resolve", [None, lambda future: future.set_exception(OSError("disk"))])
def test_an_exception_raised_now_or_after_a_wait_reaches_finished(resolve):
    async def fails(future):
        if resolve is not None:
            await future
        raise OSError("disk")

    outcome = run_stepped(fails, resolve=resolve)
    assert isinstance(outcome["exc"], OSError) and outcome["result"] is None
