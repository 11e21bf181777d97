"""When the batcher cuts a batch: full at once; partial after the linger while every sender is idle, after the
flush interval while a bulk is in flight."""

import asyncio

import pytest

from event_collector.buffer import Buffer
from event_collector.envelope import Envelope
from event_collector.shipper.batcher import Batcher


def envelope(n: int) -> Envelope:
    return Envelope("i", str(n), b"x" * 10, 0.0)


@pytest.fixture
async def running():
    started: list[asyncio.Task] = []

    def start(batcher: Batcher) -> Batcher:
        started.append(asyncio.create_task(batcher.run()))
        return batcher

    yield start
    for task in started:
        task.cancel()


async def next_ready(batcher: Batcher, timeout: float = 5.0) -> tuple[list[str], float]:
    """The next batch cut and how long it took to come."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    batch = await asyncio.wait_for(batcher.ready.get(), timeout)
    return [e.log_id for e in batch], loop.time() - started


async def test_with_every_sender_idle_a_partial_batch_goes_after_the_linger(running):
    buffer = Buffer(capacity=100, batch_size=10)
    batcher = running(Batcher(buffer, senders=2, flush_interval_seconds=3600, linger_seconds=0.05))
    buffer.offer_many([envelope(n) for n in range(3)])
    ids, waited = await next_ready(batcher)
    assert ids == ["0", "1", "2"]
    assert waited < 5  # not the hour of the flush interval


async def test_while_a_bulk_is_in_flight_a_partial_batch_waits_for_the_flush_interval(running):
    buffer = Buffer(capacity=100, batch_size=10)
    batcher = running(Batcher(buffer, senders=2, flush_interval_seconds=0.6, linger_seconds=0.01))
    buffer.offer(envelope(0))
    assert (await next_ready(batcher))[0] == ["0"]  # taken by a sender that does not give it back yet
    buffer.offer_many([envelope(n) for n in (1, 2)])
    ids, waited = await next_ready(batcher)
    assert ids == ["1", "2"]
    # Measured from when the batcher began waiting, which was before this wait started.
    assert waited >= 0.4, f"a partial batch was cut after {waited:.2f} s while a bulk was in flight"


async def test_a_full_batch_goes_at_once_even_while_a_bulk_is_in_flight(running):
    buffer = Buffer(capacity=100, batch_size=2)
    batcher = running(Batcher(buffer, senders=2, flush_interval_seconds=3600, linger_seconds=3600))
    buffer.offer_many([envelope(n) for n in range(4)])
    assert (await next_ready(batcher))[0] == ["0", "1"]
    assert (await next_ready(batcher))[0] == ["2", "3"]


async def test_once_the_sender_is_done_the_rest_goes_after_the_linger(running):
    buffer = Buffer(capacity=100, batch_size=10)
    batcher = running(Batcher(buffer, senders=1, flush_interval_seconds=3600, linger_seconds=0.01))
    buffer.offer(envelope(0))
    assert (await next_ready(batcher))[0] == ["0"]
    buffer.offer(envelope(1))
    batcher.sender_free()
    ids, waited = await next_ready(batcher)
    assert ids == ["1"] and waited < 5


async def test_a_linger_as_long_as_the_flush_interval_keeps_the_original_behaviour(running):
    buffer = Buffer(capacity=100, batch_size=10)
    batcher = running(Batcher(buffer, senders=2, flush_interval_seconds=0.5, linger_seconds=0.5))
    buffer.offer(envelope(0))
    ids, waited = await next_ready(batcher)
    assert ids == ["0"] and waited >= 0.4


async def test_no_more_batches_are_out_than_the_concurrency_limit(running):
    from event_collector.shipper.concurrency import AdaptiveConcurrency

    buffer = Buffer(capacity=100, batch_size=2)
    controller = AdaptiveConcurrency(4)  # starts at one bulk in flight
    batcher = running(Batcher(buffer, senders=4, flush_interval_seconds=3600, linger_seconds=3600,
                              concurrency=controller))
    buffer.offer_many([envelope(n) for n in range(6)])
    assert (await next_ready(batcher))[0] == ["0", "1"]
    with pytest.raises(asyncio.TimeoutError):  # a full batch waits while the one allowed bulk is out
        await next_ready(batcher, timeout=0.3)
    controller.limit = 2  # the controller allows one more: it goes once the batcher looks again
    batcher.sender_free()
    assert (await next_ready(batcher))[0] == ["2", "3"]
    assert (await next_ready(batcher))[0] == ["4", "5"]


async def test_the_concurrency_limit_never_exceeds_the_senders():
    from event_collector.shipper.concurrency import AdaptiveConcurrency

    batcher = Batcher(Buffer(capacity=10, batch_size=2), senders=2, flush_interval_seconds=1,
                      concurrency=AdaptiveConcurrency(10, adaptive=False))
    assert batcher.concurrency.limit == 2 and batcher.concurrency.maximum == 2
