"""kafka/producer.py's batching of acknowledgements: records count down one future per request, and the
poller wakes the event loop once per round. Real librdkafka with nothing listening reaches the failures."""

from __future__ import annotations

import asyncio
import socket

import pytest
from confluent_kafka import KafkaError

from event_collector.envelope import Envelope
from event_collector.exceptions import KafkaUnavailable
from event_collector.kafka import producer as producer_module
from event_collector.kafka.producer import Acknowledgement, EventProducer
from event_collector.settings import load_settings


def nowhere() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def settings(**extra: str):
    return load_settings({"ACK_MODE": "kafka", "KAFKA_BOOTSTRAP_SERVERS": nowhere(), "JWT_SECRET": "x" * 40,
                          "KAFKA_PRODUCE_TIMEOUT_SECONDS": "1", **extra}, env_file=None)


def envelopes(count: int) -> list[Envelope]:
    return [Envelope(index="events_t_2026-11", log_id=f"id-{n}", document=b"{}", received_at=0.0, user_id="u")
            for n in range(count)]


class CountingLoop:
    """The running loop, counting the wake-ups from the poller thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.wakes = 0

    def call_soon_threadsafe(self, callback, *args):
        self.wakes += 1
        return self.loop.call_soon_threadsafe(callback, *args)


async def test_each_request_resolves_once_all_its_records_are_in_with_one_wake_per_round() -> None:
    producer = EventProducer(settings())
    loop = CountingLoop(asyncio.get_running_loop())
    producer._loop = loop  # noqa: SLF001 - the poller's rounds are driven by hand here
    acknowledgements = [Acknowledgement(loop.loop.create_future(), 2, producer) for _ in range(3)]
    for acknowledgement in acknowledgements:
        acknowledgement.delivered(None, None)
    producer._hand_over()  # noqa: SLF001
    assert loop.wakes == 0 and not any(a.future.done() for a in acknowledgements)

    acknowledgements[0].delivered(None, None)
    acknowledgements[1].delivered(KafkaError(KafkaError._MSG_TIMED_OUT), None)
    acknowledgements[2].delivered(None, None)
    producer._hand_over()  # noqa: SLF001
    assert loop.wakes == 1, "one wake for the round, not one per request"
    results = await asyncio.gather(*(a.future for a in acknowledgements))
    assert results[0] is None and results[2] is None
    assert "timed out" in results[1].lower()


async def test_unreachable_brokers_refuse_at_once_and_a_queued_record_fails_within_the_timeout() -> None:
    producer = EventProducer(settings())
    await producer.start()
    try:
        assert producer.unreachable is not None
        with pytest.raises(KafkaUnavailable):
            producer.send(envelopes(1))
        # Queued before the outage was known: librdkafka fails it within message.timeout.ms (1 s).
        producer.unreachable = None
        error = await asyncio.wait_for(producer.send(envelopes(2)), 10)
        assert error is not None
    finally:
        assert await producer.stop(1.0) == 0


async def test_a_request_that_does_not_fit_in_librdkafkas_queue_is_refused_whole(monkeypatch) -> None:
    config = producer_module.producer_config
    monkeypatch.setattr(producer_module, "producer_config",
                        lambda s: {**config(s), "queue.buffering.max.messages": 2})
    producer = EventProducer(settings(KAFKA_PRODUCE_TIMEOUT_SECONDS="30"))
    producer._loop = asyncio.get_running_loop()  # noqa: SLF001 - no poller: the records stay queued
    partly_queued = producer.send(envelopes(3))
    with pytest.raises(KafkaUnavailable, match="could not queue"):
        producer.send(envelopes(1))  # the queue is full: nothing of it is queued
    producer._producer.purge()  # noqa: SLF001 - fail what was queued, as a timeout would
    producer._producer.poll(1)  # noqa: SLF001
    producer._hand_over()  # noqa: SLF001
    assert "could not queue" in await asyncio.wait_for(partly_queued, 5)
