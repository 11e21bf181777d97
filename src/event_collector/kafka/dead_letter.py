"""The Kafka dead-letter topic (KAFKA_DEAD_LETTER_TOPIC): what the indexers write there, and the
`event-collector dead-letter list|requeue` commands that read it (docs/scale-indexer.md).

A letter is the refused record as it was (key, value, headers) plus headers saying why:
`dead_letter_reason`, `dead_letter_status` (OpenSearch's item status, empty for a record that is not an
event), `dead_letter_attempts`, `dead_letter_at` (seconds since the epoch) and where it came from
(`dead_letter_source`: topic/partition/offset).

`list` reads the topic by offsets (assign, never a group subscription) and commits nothing. `requeue`
produces letters back to KAFKA_TOPIC with their original key, value and headers, and then records how far
it went as the committed offset of a group of its own, `{KAFKA_GROUP_ID}.requeue`: the next requeue starts
there, so a letter is requeued once. A requeued event that is indexed is indexed once whatever happens
(its `_id` is its log_id), so a letter requeued twice costs a 409, never a duplicate.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from ..exceptions import CollectorError
from ..settings import Settings
from .config import connection_config

_PREFIX = "dead_letter_"
_READ_WAIT_SECONDS = 10.0


def letter_headers(message: Message, reason: str, status: str, attempts: int) -> list[tuple[str, bytes]]:
    original = [(name, value) for name, value in message.headers() or () if not name.startswith(_PREFIX)]
    return original + [
        ("dead_letter_reason", reason.encode()),
        ("dead_letter_status", status.encode()),
        ("dead_letter_attempts", str(attempts).encode()),
        ("dead_letter_at", repr(time.time()).encode()),
        ("dead_letter_source", f"{message.topic()}/{message.partition()}/{message.offset()}".encode()),
    ]


@dataclass
class Letter:
    partition: int
    offset: int
    message: Message

    def header(self, name: str) -> str:
        for key, value in self.message.headers() or ():
            if key == name and value is not None:
                return value.decode(errors="replace")
        return ""

    @property
    def reason(self) -> str:
        return self.header("dead_letter_reason")

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(name, value) for name, value in self.message.headers() or () if not name.startswith(_PREFIX)]

    def describe(self) -> str:
        at = self.header("dead_letter_at")
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(at))) if at else "?"
        return (f"{self.partition}/{self.offset}  {when}  log_id={self.header('log_id') or '?'}  "
                f"attempts={self.header('dead_letter_attempts') or '0'}  {self.reason}")


def requeue_group(settings: Settings) -> str:
    return f"{settings.kafka_group}.requeue"


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer({**connection_config(settings), "group.id": group, "enable.auto.commit": False,
                     "enable.auto.offset.store": False})


def _read(consumer: Consumer, topic: str, starts: dict[int, int]) -> tuple[list[Letter], dict[int, int]]:
    """Every letter from `starts` (offset per partition; -1 for the beginning) to the end the topic had
    when reading began; returns them with the end offsets."""
    ends, firsts = {}, {}
    for partition in starts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=_READ_WAIT_SECONDS)
        firsts[partition] = max(low, starts[partition])
        ends[partition] = high
    wanted = {p for p in starts if firsts[p] < ends[p]}
    letters: list[Letter] = []
    if not wanted:
        return letters, ends
    consumer.assign([TopicPartition(topic, p, firsts[p]) for p in wanted])
    deadline = time.monotonic() + 60
    while wanted:
        if time.monotonic() > deadline:
            raise CollectorError(f"reading {topic} timed out: partitions {sorted(wanted)} did not reach their end")
        for message in consumer.consume(500, timeout=1.0):
            if message.error():
                raise CollectorError(f"reading {topic}: {message.error()}")
            partition = message.partition()
            if partition in wanted and message.offset() < ends[partition]:
                letters.append(Letter(partition, message.offset(), message))
                if message.offset() + 1 >= ends[partition]:
                    wanted.discard(partition)
    return letters, ends


def _partitions(consumer: Consumer, topic: str) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=_READ_WAIT_SECONDS).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise CollectorError(f"no dead-letter topic {topic} (KAFKA_DEAD_LETTER_TOPIC): "
                             f"{metadata.error if metadata is not None else 'not found'}")
    return sorted(metadata.partitions)


def _matches(letter: Letter, reason: str | None) -> bool:
    return reason is None or reason.lower() in letter.reason.lower()


def _list(settings: Settings, reason: str | None, limit: int) -> str:
    topic = settings.kafka_dead_letter_topic_name
    consumer = _consumer(settings, requeue_group(settings))
    try:
        partitions = _partitions(consumer, topic)
        marks = _marks(consumer, topic, partitions)
        letters, _ = _read(consumer, topic, dict.fromkeys(partitions, -1))
    except KafkaException as exc:
        raise CollectorError(f"reading {topic}: {exc}") from None
    finally:
        consumer.close()
    matching = [letter for letter in letters if _matches(letter, reason)]
    letters_shown = sorted(matching, key=lambda letter: letter.header("dead_letter_at"))[:limit]
    lines = [f"{len(matching)} dead letters in {topic} (partition/offset; those before a partition's requeue mark "
             f"{marks} were requeued already)"]
    lines += [letter.describe() for letter in letters_shown]
    return "\n".join(lines)


def _marks(consumer: Consumer, topic: str, partitions: list[int]) -> dict[int, int]:
    """The requeue group's committed offset per partition (-1: nothing requeued yet)."""
    committed = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=_READ_WAIT_SECONDS)
    return {tp.partition: tp.offset if tp.offset >= 0 else -1 for tp in committed}


def _requeue(settings: Settings, reason: str | None) -> str:
    topic, target = settings.kafka_dead_letter_topic_name, settings.kafka_topic_name
    consumer = _consumer(settings, requeue_group(settings))
    producer = Producer({**connection_config(settings), "enable.idempotence": True, "acks": "all"})
    try:
        partitions = _partitions(consumer, topic)
        marks = _marks(consumer, topic, partitions)
        letters, ends = _read(consumer, topic, marks)
        chosen = [letter for letter in letters if _matches(letter, reason)]
        errors: list = []
        for letter in chosen:
            message = letter.message
            producer.produce(target, key=message.key(), value=message.value(), headers=letter.original_headers(),
                             on_delivery=lambda err, _m: err and errors.append(err))
            producer.poll(0)
        unsent = producer.flush(settings.kafka_produce_timeout_seconds * 3)
        if unsent or errors:
            raise CollectorError(f"could not requeue to {target}: {errors[:1] or f'{unsent} unacknowledged'}; "
                                 "the requeue mark did not move, run it again")
        # The mark moves over every letter read, or, with --reason, up to the first letter left out, so
        # that the others can be requeued later (one requeued after it may then be requeued again: a 409).
        new_marks = {}
        for partition in partitions:
            new_marks[partition] = ends[partition]
            for letter in letters:
                if letter.partition == partition and not _matches(letter, reason):
                    new_marks[partition] = min(new_marks[partition], letter.offset)
        moved = [TopicPartition(topic, p, o) for p, o in new_marks.items() if o > max(marks[p], 0) or
                 (marks[p] < 0 and o > 0)]
        if moved:
            consumer.commit(offsets=moved, asynchronous=False)
    except KafkaException as exc:
        raise CollectorError(f"requeueing from {topic}: {exc}") from None
    finally:
        consumer.close()
    return f"{len(chosen)} dead letters requeued to {target}"


async def dead_letter_list(settings: Settings, reason: str | None, limit: int) -> str:
    return await asyncio.to_thread(_list, settings, reason, limit)


async def dead_letter_requeue(settings: Settings, reason: str | None) -> str:
    return await asyncio.to_thread(_requeue, settings, reason)
