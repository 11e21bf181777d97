"""The fast path's bookkeeping: counts added to Prometheus in bulk, and the 200 answers encoded once per Date."""

import asyncio

from event_collector import metrics
from event_collector.api import fastpath
from event_collector.collecting import CREATED, PENDING


def counted() -> tuple[float, float, float]:
    return (metrics.fast_path_answers._value.get(), metrics.received_created._value.get(),
            metrics.received_pending._value.get())


def test_counts_reach_the_counters_once_within_the_same_turn_of_the_loop():
    tally = fastpath.Tally()

    async def main():
        loop = asyncio.get_running_loop()
        before = counted()
        for status in (CREATED, CREATED, PENDING):
            tally.kept(status)
            tally.answered(loop)
        assert counted() == before  # not one increment per request
        await asyncio.sleep(0)  # the next turn of the loop
        assert counted() == (before[0] + 3, before[1] + 2, before[2] + 1)
        tally.flush()  # as the protocol does before an ASGI request: nothing is counted twice
        await asyncio.sleep(0)
        assert counted() == (before[0] + 3, before[1] + 2, before[2] + 1)
        tally.answered(loop)
        tally.flush()
        assert counted()[0] == before[0] + 4

    asyncio.run(main())


def test_a_loop_closed_before_its_flush_does_not_stop_the_next_from_counting():
    tally = fastpath.Tally()
    # A flush scheduled on a loop that was closed before it ran it.
    stale = asyncio.new_event_loop()
    tally._scheduled_on = stale
    stale.close()
    before = counted()[0]

    async def count_and_turn():
        tally.answered(asyncio.get_running_loop())
        await asyncio.sleep(0)

    asyncio.run(count_and_turn())
    assert counted()[0] == before + 1


def test_the_200_answers_are_the_bytes_of_their_encoding_for_the_current_date():
    created = fastpath._STATUS_ANSWERS[CREATED]
    first = [(b"date", b"Sat, 28 Nov 2026 12:00:00 GMT"), (b"server", b"uvicorn")]
    second = [(b"date", b"Sat, 28 Nov 2026 12:00:01 GMT"), (b"server", b"uvicorn")]
    for keep_alive in (True, False):
        assert fastpath.encode(created, first, keep_alive) == fastpath._encode(created, first, keep_alive)
    assert b"connection: close" in fastpath.encode(created, first, False)
    assert b"connection: close" not in fastpath.encode(created, first, True)
    # uvicorn replaces its default headers when the second changes: the new Date is written.
    assert b"12:00:01" in fastpath.encode(created, second, True)
    assert fastpath.encode(fastpath._STATUS_ANSWERS[PENDING], second, True).endswith(b'{"status":"pending"}')
    # Any other answer is encoded as it is.
    refusal = fastpath.answer(401, {"error": "no"})
    assert fastpath.encode(refusal, second, True).startswith(b"HTTP/1.1 401")
    assert not fastpath.ends_connection(created) and fastpath.ends_connection(fastpath.INTERNAL_ERROR)
