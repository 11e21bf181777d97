"""The fast path's bookkeeping: counts added to Prometheus in bulk, and the 200 answers encoded once per Date."""

import asyncio

from event_collector import metrics
from event_collector.api import answers, fastpath, wire
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
    created = answers.STATUS_ANSWERS[CREATED]
    first = [(b"date", b"Sat, 28 Nov 2026 12:00:00 GMT"), (b"server", b"uvicorn")]
    second = [(b"date", b"Sat, 28 Nov 2026 12:00:01 GMT"), (b"server", b"uvicorn")]
    for keep_alive in (True, False):
        assert wire.encode(created, first, keep_alive) == (wire._encode(created, first, keep_alive), keep_alive)
    assert b"connection: close" in wire.encode(created, first, False)[0]
    assert b"connection: close" not in wire.encode(created, first, True)[0]
    # uvicorn replaces its default headers when the second changes: the new Date is written.
    assert b"12:00:01" in wire.encode(created, second, True)[0]
    assert wire.encode(answers.STATUS_ANSWERS[PENDING], second, True)[0].endswith(b'{"status":"pending"}')
    # Any other answer is encoded as it is; one that says `connection: close` ends the connection.
    refusal = answers.answer(401, {"error": "no"})
    assert wire.encode(refusal, second, True) == (wire._encode(refusal, second, True), True)
    assert wire.encode(refusal, second, True)[0].startswith(b"HTTP/1.1 401")
    failed, keep_alive = wire.encode(fastpath.INTERNAL_ERROR, second, True)
    assert not keep_alive and failed.count(b"connection: close") == 1
