import asyncio

from event_collector.buffer import Buffer
from event_collector.envelope import Envelope


def envelope(n: int, size: int = 10) -> Envelope:
    return Envelope("i", str(n), b"x" * size, 0.0)


def test_a_full_buffer_refuses_and_counts_it():
    buffer = Buffer(capacity=3, batch_size=10)
    assert buffer.offer_many([envelope(n) for n in range(5)]) == 3
    stats = buffer.statistics()
    assert (stats.capacity, stats.size, stats.accepted_total, stats.refused_total) == (3, 3, 3, 1)
    assert buffer.free_space == 0


async def test_a_full_batch_is_taken_without_waiting_for_the_interval():
    buffer = Buffer(capacity=100, batch_size=4)
    buffer.offer_many([envelope(n) for n in range(6)])
    batch = await asyncio.wait_for(buffer.next_batch(flush_interval_seconds=3600), timeout=5)
    assert [e.log_id for e in batch] == ["0", "1", "2", "3"]


async def test_a_partial_batch_is_taken_once_the_interval_passes():
    buffer = Buffer(capacity=100, batch_size=4)
    buffer.offer(envelope(1))
    assert [e.log_id for e in await buffer.next_batch(flush_interval_seconds=0.05)] == ["1"]


async def test_a_waiting_shipper_wakes_when_a_batch_fills():
    buffer = Buffer(capacity=100, batch_size=2)
    waiting = asyncio.create_task(buffer.next_batch(flush_interval_seconds=3600))
    await asyncio.sleep(0)
    buffer.offer_many([envelope(1), envelope(2)])
    assert len(await asyncio.wait_for(waiting, timeout=5)) == 2


def test_batches_are_bounded_in_bytes_but_never_empty():
    buffer = Buffer(capacity=100, batch_size=10, batch_max_bytes=25)
    buffer.offer_many([envelope(n, size=10) for n in range(3)] + [envelope(9, size=100)])
    assert len(buffer.take(10)) == 2
    assert len(buffer.take(10)) == 1
    assert len(buffer.take(10)) == 1


async def test_a_closed_buffer_refuses_and_hands_out_what_is_left_at_once():
    buffer = Buffer(capacity=100, batch_size=50)
    buffer.offer(envelope(1))
    buffer.close()
    assert not buffer.offer(envelope(2))
    assert len(await asyncio.wait_for(buffer.next_batch(flush_interval_seconds=3600), timeout=5)) == 1
    assert await buffer.next_batch(flush_interval_seconds=3600) == []


def test_what_a_byte_bound_batch_leaves_stays_in_order_at_the_head():
    buffer = Buffer(capacity=100, batch_size=10, batch_max_bytes=25)
    buffer.offer_many([envelope(n, size=10) for n in range(6)])
    taken = [[e.log_id for e in buffer.take(10)] for _ in range(3)]
    assert taken == [[envelope(n).log_id for n in pair] for pair in ((0, 1), (2, 3), (4, 5))]
    assert len(buffer) == 0
