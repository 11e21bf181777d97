"""The indexer's commit rule (kafka/indexer.py, membership.py, dead_letter_writer.py) at edges a real cluster
reaches only by chance: a partition revoked and assigned again while a 413 split is under way, and dead letters
whose delivery reports are late or failed. Fakes stand in for the consumer, the producer and OpenSearch;
tests/faults/test_kafka_topology.py has the real brokers."""

from __future__ import annotations

import asyncio
import threading
import time

import msgspec
from confluent_kafka import KafkaError, TopicPartition

from event_collector.envelope import Envelope
from event_collector.kafka.indexer import Indexer
from event_collector.kafka.records import to_record
from event_collector.settings import load_settings

TOPIC = "events_unit"


class FakeMessage:
    def __init__(self, partition: int, offset: int, log_id: str, label: str = "ok") -> None:
        document = msgspec.json.encode({"log_id": log_id, "event_info": {"label": label}})
        self._key, self._value, self._headers = to_record(
            Envelope(index="events_unit_2026-11", log_id=log_id, document=document, received_at=0.0, user_id="u"))
        self._partition, self._offset = partition, offset

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list:
        return self._headers

    def error(self) -> None:
        return None


class FakeConsumer:
    def __init__(self, partitions: list[int]) -> None:
        self.assigned = [TopicPartition(TOPIC, p) for p in partitions]
        self.commits: list[dict[int, int]] = []

    def commit(self, offsets, asynchronous):
        assert asynchronous is False
        self.commits.append({tp.partition: tp.offset for tp in offsets})

    def assignment(self):
        return list(self.assigned)

    def pause(self, partitions):
        pass

    def resume(self, partitions):
        pass

    def poll(self, timeout):
        return None


class FakeOpenSearch:
    """Answers each bulk request with `answer(call number, log_ids in the body)`."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.bodies: list[list[str]] = []

    async def bulk(self, body: bytes):
        lines = [msgspec.json.decode(line) for line in body.splitlines() if line]
        log_ids = [line["create"]["_id"] for line in lines[0::2]]
        self.bodies.append(log_ids)
        return self.answer(len(self.bodies), log_ids)


class FakeTemplate:
    async def ensure(self, indices=()) -> None:
        pass


def created(log_ids: list[str]):
    return 200, {"items": [{"create": {"_id": log_id, "status": 201}} for log_id in log_ids]}


def refused(log_ids: list[str]):
    error = {"type": "mapper_parsing_exception", "reason": "failed to parse field [event_info.label]"}
    return 200, {"items": [{"create": {"_id": log_id, "status": 400, "error": error}} for log_id in log_ids]}


def indexer_with(consumer: FakeConsumer, opensearch: FakeOpenSearch, producer=None) -> Indexer:
    indexer = Indexer(load_settings({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "SERVER_ENVIRONMENT": "unit",
                                     "KAFKA_TOPIC": TOPIC, "KAFKA_PRODUCE_TIMEOUT_SECONDS": "1"}, env_file=None))
    indexer._member.consumer, indexer._client, indexer._template = consumer, opensearch, FakeTemplate()  # noqa: SLF001
    indexer._letters.producer = producer  # noqa: SLF001
    return indexer


async def test_a_partition_revoked_and_assigned_again_during_a_413_split_is_not_committed_past_its_dropped_record():
    consumer = FakeConsumer([0, 1])
    messages = [FakeMessage(0, 10, "on-0"), FakeMessage(1, 20, "on-1")]
    indexer: Indexer

    def answer(call: int, log_ids: list[str]):
        if call == 1:
            # The rebalance lands while the whole batch is refused as too large: partition 0 is revoked, so the
            # first half (its record) is dropped uncommitted ...
            indexer._member.on_revoke(consumer, [TopicPartition(TOPIC, 0)])  # noqa: SLF001
            return 413, {"error": "too large"}
        # ... and assigned back to this member before the batch commits.
        indexer._member.on_assign(consumer, [TopicPartition(TOPIC, 0)])  # noqa: SLF001
        return created(log_ids)

    opensearch = FakeOpenSearch(answer)
    indexer = indexer_with(consumer, opensearch)
    await indexer._index(messages)  # noqa: SLF001
    # Only the delivered record's partition moves: offset 11 would skip "on-0", which never reached OpenSearch.
    assert consumer.commits == [{1: 21}]
    # The dropped half costs no request of its own (an empty bulk body).
    assert opensearch.bodies == [["on-0", "on-1"], ["on-1"]]


class SilentThenAcknowledgingProducer:
    """A dead-letter producer whose brokers do not answer (no delivery report at all, as while the topic's
    partition has no leader or too few in-sync replicas), then time the letter out, then take it again."""

    def __init__(self, reports: list[KafkaError | None | str]) -> None:
        # One entry per flush: "silent" (no report for anything queued), an error, or None (acknowledged).
        self.reports = reports
        self.flushes = 0
        self.produced: list[bytes] = []
        self._queued: list = []
        self._lock = threading.Lock()

    def produce(self, topic, key=None, value=None, headers=None, on_delivery=None):
        with self._lock:
            self.produced.append(value)
            self._queued.append(on_delivery)

    def flush(self, timeout: float = -1) -> int:
        with self._lock:
            report = self.reports[min(self.flushes, len(self.reports) - 1)]
            self.flushes += 1
            if isinstance(report, str):  # "silent"
                time.sleep(min(timeout, 0.05))  # librdkafka blocks for the timeout; a short stand-in
                return len(self._queued)
            queued, self._queued = self._queued, []
        for on_delivery in queued:
            on_delivery(report, None)
        return 0

    def poll(self, timeout: float = 0) -> int:
        return 0


async def test_a_dead_letter_without_a_delivery_report_or_with_a_failed_one_is_never_committed_past():
    consumer = FakeConsumer([0])
    messages = [FakeMessage(0, 0, "good"), FakeMessage(0, 1, "poison", label="oops"), FakeMessage(0, 2, "good-2")]
    opensearch = FakeOpenSearch(lambda call, ids: (200, {"items": [
        created([i])[1]["items"][0] if i != "poison" else refused([i])[1]["items"][0] for i in ids]}))
    producer = SilentThenAcknowledgingProducer(["silent", "silent", "silent", KafkaError(KafkaError._MSG_TIMED_OUT),
                                                None])
    indexer = indexer_with(consumer, opensearch, producer)
    batch = asyncio.create_task(indexer._index(messages))  # noqa: SLF001
    while producer.flushes < 4 and not batch.done():
        await asyncio.sleep(0.01)
    # Three flushes gave no report and the fourth a failure: nothing is committed, and the letter still queued
    # was not produced a second time while its report was outstanding.
    assert consumer.commits == [] and len(producer.produced) == 1
    await asyncio.wait_for(batch, 30)
    # Produced again after the failure, acknowledged, and only then committed.
    assert len(producer.produced) == 2 and producer.flushes == 5
    assert consumer.commits == [{0: 3}]
    assert (indexer.delivered, indexer.dead_lettered) == (2, 1)


async def test_a_stop_while_a_dead_letter_is_unacknowledged_leaves_the_batch_uncommitted(caplog):
    consumer = FakeConsumer([0])
    opensearch = FakeOpenSearch(lambda call, ids: refused(ids))
    producer = SilentThenAcknowledgingProducer(["silent", "silent", KafkaError(KafkaError._MSG_TIMED_OUT), "silent"])
    indexer = indexer_with(consumer, opensearch, producer)
    batch = asyncio.create_task(indexer._index([FakeMessage(0, 0, "poison", label="oops")]))  # noqa: SLF001
    while producer.flushes < 1 and not batch.done():
        await asyncio.sleep(0.01)
    indexer.stopping.set()
    # The letter in flight is waited for; once it failed, the stop does not wait out the backoff.
    await asyncio.wait_for(batch, 10)
    assert consumer.commits == [] and indexer.dead_lettered == 0 and len(producer.produced) == 1
    assert "abandoned, uncommitted, 1 of its dead letters not acknowledged" in caplog.text
