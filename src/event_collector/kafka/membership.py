"""The indexer's consumer in the group KAFKA_GROUP_ID: the records it reads, the partitions it holds, and the
offsets it commits.

Partitions revoked during a batch (a rebalance) are dropped from it and never committed by this member, even
if they are assigned back before the batch ends: their owner reads them again from the last commit. While a
batch waits, the partitions are paused and the consumer is polled meanwhile so that the group keeps it as a
member (max.poll.interval.ms). Which member owns which partition is Kafka's group protocol.
"""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from ..settings import Settings
from .batch import Batch, Letter
from .config import connection_config
from .records import BadRecord, from_record

log = logging.getLogger(__name__)

# How often a batch that waits (breaker open, retry backoff) polls the paused consumer to stay in the group.
_KEEP_ALIVE_SECONDS = 1.0
# How long one consume() waits for records when the topic is quiet: bounds how late a stop is noticed.
_CONSUME_WAIT_SECONDS = 0.5


def consumer_config(settings: Settings) -> dict:
    return {
        **connection_config(settings),
        "group.id": settings.kafka_group,
        # KIP-848: Kafka 4 brokers assign partitions incrementally, so indexers joining or leaving do not
        # stop the others (measured in docs/kafka-notes.md).
        "group.protocol": "consumer",
        "enable.auto.commit": False,
        # Offsets are stored only by the explicit commit after delivery.
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
    }


class GroupMember:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.consumer: Consumer | None = None
        # Consumer calls go to threads one at a time: librdkafka's calls block.
        self._consumer_lock = asyncio.Lock()
        self._revoked: set[tuple[str, int]] = set()
        self._paused: list[TopicPartition] = []
        # Records fetched while a batch was in progress (a partition assigned meanwhile): the next batch's.
        self._carried: list[Message] = []

    def join(self) -> None:
        self.consumer = Consumer(consumer_config(self._settings), logger=log)
        self.consumer.subscribe([self._settings.kafka_topic_name], on_assign=self.on_assign,
                                on_revoke=self.on_revoke, on_lost=self.on_revoke)

    async def leave(self) -> None:
        """Leaving the group hands its partitions over at once; nothing uncommitted is committed."""
        await asyncio.to_thread(self.consumer.close)

    async def consume(self) -> list[Message]:
        """The next batch's records: those carried over from the last one, or up to BULK_SIZE from the topic."""
        messages = self._carried or await self._call(self.consumer.consume, self._settings.bulk_size,
                                                     _CONSUME_WAIT_SECONDS)
        self._carried = []
        return messages

    def batch(self, messages: list[Message]) -> Batch:
        """The records of `messages` this member still owns; one that is not an event goes to dead-letter."""
        kept = []
        for message in messages:
            error = message.error()
            if error is None and (message.topic(), message.partition()) in self._revoked:
                continue  # fetched before its partition was revoked; its next owner reads it
            if error is None:
                kept.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.error("consumer error: %s", error)
        batch = Batch(kept)
        for position, message in enumerate(kept):
            try:
                batch.waiting[position] = from_record(message.key(), message.value(), message.headers())
            except BadRecord as exc:
                batch.letters.append(Letter(message, str(exc), "", 0))
        return batch

    async def commit(self, batch: Batch) -> None:
        """Commit, per partition, the offset after the batch's last record (all of them are settled)."""
        self.drop_revoked(batch)
        last: dict[tuple[str, int], int] = {}
        for message in batch.messages:
            place = (message.topic(), message.partition())
            if place not in self._revoked and place not in batch.abandoned:
                last[place] = max(last.get(place, -1), message.offset())
        if not last:
            return
        offsets = [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]
        try:
            await self._call(self.consumer.commit, offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The partitions moved on (a rebalance): their next owner re-reads from the last commit; the
            # events are in OpenSearch already and answer 409.
            log.warning("could not commit offsets %s: %s", offsets, exc)

    def drop_revoked(self, batch: Batch) -> None:
        """Records of partitions this member lost are its no longer: abandon them, uncommitted."""
        if not self._revoked:
            return
        for position, message in enumerate(batch.messages):
            if (message.topic(), message.partition()) in self._revoked:
                batch.waiting.pop(position, None)
                batch.abandoned.add((message.topic(), message.partition()))
        batch.letters = [letter for letter in batch.letters
                         if (letter.message.topic(), letter.message.partition()) not in self._revoked]

    async def keep_alive(self) -> None:
        """A batch that waits (breaker open, retry backoff, dead letters not acknowledged yet) pauses the
        partitions, so nothing more is fetched, and polls the consumer: the group drops a member that does not
        poll within max.poll.interval.ms; rebalance callbacks run here too. A batch settled within a second
        pauses nothing, so that librdkafka's prefetch of the next one is kept (a pause discards it)."""
        while True:
            await asyncio.sleep(_KEEP_ALIVE_SECONDS)
            if not self._paused:
                await self._pause()
            message = await self._call(self.consumer.poll, 0)
            if message is not None and message.error() is None:
                # Only a partition assigned during the batch can give one: keep it for the next batch.
                self._carried.append(message)
                await self._call(self.consumer.pause, [TopicPartition(message.topic(), message.partition())])

    async def _pause(self) -> None:
        self._paused = await self._call(self.consumer.assignment)
        if self._paused:
            await self._call(self.consumer.pause, self._paused)

    async def resume(self) -> None:
        """Resume what `keep_alive` paused, if it did."""
        if not self._paused:
            return
        assigned = await self._call(self.consumer.assignment)
        if assigned:
            await self._call(self.consumer.resume, assigned)
        self._paused = []

    async def _call(self, function, *args, **kwargs):
        async with self._consumer_lock:
            return await asyncio.to_thread(function, *args, **kwargs)

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", _names(partitions))
        for partition in partitions:
            self._revoked.discard((partition.topic, partition.partition))

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", _names(partitions))
        self._revoked.update((partition.topic, partition.partition) for partition in partitions)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "none"
