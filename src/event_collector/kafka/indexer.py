"""`event-collector index`: a member of the consumer group KAFKA_GROUP_ID that bulk-indexes the topic's events.

One batch at a time: consume up to BULK_SIZE records, deliver every event (the serve path's bulk body,
`_id`, classification and breaker: shipper/bulk.py, shipper/client.py, retry.py), dead-letter the refused
ones to KAFKA_DEAD_LETTER_TOPIC and wait until the brokers have acknowledged each letter, then commit the
batch's offsets synchronously, and only then consume the next batch. An offset is therefore committed only
once every record before it is in OpenSearch or in the dead-letter topic; a crash at any point re-reads from
the last commit, and the re-sent `create`s answer 409, counted as delivered (exactly once in OpenSearch).

While OpenSearch does not take requests, or the dead-letter topic does not take the letters, the batch is
held and the partitions are paused; the consumer is polled meanwhile so that the group keeps it as a member
(max.poll.interval.ms). Partitions revoked during a batch (a rebalance) are dropped from it and never
committed by this member, even if they are assigned back before the batch ends: their owner reads them again
from the last commit. Which member owns which partition is Kafka's group protocol.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from .. import metrics
from ..envelope import Envelope
from ..exceptions import OpenSearchUnavailable
from ..retry import Breaker, backoff_seconds, pause_reason
from ..settings import Settings
from ..shipper.bulk import bulk_body, classify
from ..shipper.client import OpenSearchClient
from ..shipper.template import TemplateGuard
from .config import connection_config
from .dead_letter import letter_headers
from .records import BadRecord, from_record

log = logging.getLogger(__name__)

# How often a batch that waits (breaker open, retry backoff) polls the paused consumer to stay in the group.
_KEEP_ALIVE_SECONDS = 1.0
# How long one consume() waits for records when the topic is quiet: bounds how late a stop is noticed.
_CONSUME_WAIT_SECONDS = 0.5
# How long the dead letters of an abandoned batch may take to reach the brokers at exit. Their batch is not
# committed, so the partitions' next owner writes them again anyway: this only saves work, never an event.
_EXIT_FLUSH_SECONDS = 5.0
# A letter is the topic's record plus the dead_letter_* headers (the reason is OpenSearch's, a few hundred bytes).
_LETTER_OVERHEAD_BYTES = 128 * 1024
_STATUS = re.compile(r"^(\d{3})\b")


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


def producer_config(settings: Settings) -> dict:
    return {
        **connection_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # Each letter gets its delivery report, acknowledged or failed, within KAFKA_PRODUCE_TIMEOUT_SECONDS;
        # librdkafka retries inside that window itself (a new leader, too few in-sync replicas). A letter
        # reported failed is produced again by the indexer, with a backoff, for as long as it takes, and the
        # batch stays uncommitted meanwhile: the timeout decides how often that is logged, never whether a
        # letter is given up. librdkafka's default (300 s) left five minutes without a word; 0 (no timeout)
        # would never report a topic that stays unwritable.
        "message.timeout.ms": int(settings.kafka_produce_timeout_seconds * 1000),
        # A record on the topic may be as large as the collectors produce (MAX_BODY_BYTES and headers, see
        # kafka/producer.py); librdkafka's 1,000,000-byte default would refuse the letter of the largest.
        "message.max.bytes": max(1_000_000, settings.max_body_bytes + _LETTER_OVERHEAD_BYTES),
    }


class _Letter:
    """One record bound for the dead-letter topic, and what the brokers said about it: written only once its
    delivery report says so (no report yet is not an acknowledgement)."""

    __slots__ = ("message", "reason", "status", "attempts", "in_flight", "acknowledged", "error")

    def __init__(self, message: Message, reason: str, status: str, attempts: int) -> None:
        self.message, self.reason, self.status, self.attempts = message, reason, status, attempts
        self.in_flight = False
        self.acknowledged = False
        self.error: KafkaError | None = None

    def reported(self, error: KafkaError | None, _message: Message | None) -> None:
        """librdkafka's delivery report, in the thread that flushes."""
        self.error = error
        self.acknowledged = error is None
        self.in_flight = False


@dataclass
class _Batch:
    messages: list[Message]
    # The records still to deliver and the attempts each used, by position in `messages`.
    waiting: dict[int, Envelope] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    # The records that go to the dead-letter topic.
    letters: list[_Letter] = field(default_factory=list)
    # Partitions whose records this member gave up during the batch (revoked): never committed by it.
    abandoned: set[tuple[str, int]] = field(default_factory=set)


class _Abandoned(Exception):
    """The indexer stops while the batch waits for OpenSearch, a retry or its dead letters: it is left
    uncommitted."""


class Indexer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topic = settings.kafka_topic_name
        self._dead_letter_topic = settings.kafka_dead_letter_topic_name
        self._client = OpenSearchClient.from_settings(settings, max_connections=4)
        self._template = TemplateGuard(self._client, settings.server_environment)
        self._breaker = Breaker()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # Consumer calls go to threads one at a time: librdkafka's calls block.
        self._consumer_lock = asyncio.Lock()
        self._revoked: set[tuple[str, int]] = set()
        self._paused: list[TopicPartition] = []
        # Records fetched while a batch was in progress (a partition assigned meanwhile): the next batch's.
        self._carried: list[Message] = []
        self.stopping = asyncio.Event()
        self.delivered = 0
        self.dead_lettered = 0

    async def run(self) -> None:
        await self._client.open()
        self._consumer = Consumer(consumer_config(self._settings), logger=log)
        self._producer = Producer(producer_config(self._settings), logger=log)
        self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        log.info("indexing topic %s in group %s into OpenSearch", self._topic, self._settings.kafka_group)
        # The template before the first event, as serve does: an index created meanwhile gets its mappings.
        template = asyncio.create_task(self._template.install_in_background())
        try:
            while not self.stopping.is_set():
                messages = self._carried or await self._call(self._consumer.consume,
                                                             self._settings.bulk_size, _CONSUME_WAIT_SECONDS)
                self._carried = []
                if messages:
                    await self._index(messages)
        finally:
            template.cancel()
            # Leaving the group hands its partitions over at once; nothing uncommitted is committed.
            await asyncio.to_thread(self._consumer.close)
            unsent = await asyncio.to_thread(self._producer.flush, _EXIT_FLUSH_SECONDS)
            if unsent:
                log.warning("%d dead letters not acknowledged at exit: their batch was not committed, so the "
                            "partitions' next owner dead-letters those records again", unsent)
            await self._client.close()
            log.info("indexer stopped: %d events delivered, %d dead-lettered, %d dead letters not acknowledged "
                     "at exit", self.delivered, self.dead_lettered, unsent)

    async def _index(self, messages: list[Message]) -> None:
        batch = self._read(messages)
        if not batch.messages:
            return
        started = time.perf_counter()
        keep_alive = asyncio.create_task(self._keep_alive())
        try:
            await self._deliver(batch)
            await self._dead_letter(batch)
            await self._commit(batch)
        except _Abandoned:
            unwritten = sum(not letter.acknowledged for letter in batch.letters)
            log.warning("stopping: the batch in progress is abandoned, uncommitted, %d of its dead letters not "
                        "acknowledged by the brokers (its records are read again by the partitions' next owner)",
                        unwritten)
            return
        finally:
            keep_alive.cancel()
            await asyncio.gather(keep_alive, return_exceptions=True)
            if self._paused:
                await self._resume()
        log.debug("a batch of %d records settled in %.3f s", len(batch.messages), time.perf_counter() - started)

    def _read(self, messages: list[Message]) -> _Batch:
        kept = []
        for message in messages:
            error = message.error()
            if error is None and (message.topic(), message.partition()) in self._revoked:
                continue  # fetched before its partition was revoked; its next owner reads it
            if error is None:
                kept.append(message)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.error("consumer error: %s", error)
        batch = _Batch(kept)
        for position, message in enumerate(kept):
            try:
                batch.waiting[position] = from_record(message.key(), message.value(), message.headers())
            except BadRecord as exc:
                batch.letters.append(_Letter(message, str(exc), "", 0))
        return batch

    async def _deliver(self, batch: _Batch) -> None:
        """Return when every record is delivered or bound for the dead-letter topic; the breaker holds the
        batch while OpenSearch does not take requests."""
        while batch.waiting:
            self._drop_revoked(batch)
            if not batch.waiting:
                return
            positions = list(batch.waiting)
            envelopes = [batch.waiting[p] for p in positions]
            await self._permit()
            try:
                await self._template.ensure()
                status, body = await self._client.bulk(bulk_body(envelopes))
            except OpenSearchUnavailable as exc:
                metrics.bulk_requests.labels("unreachable").inc()
                self._breaker.failed(str(exc))
                continue
            except BaseException:
                self._breaker.abandoned()
                raise
            reason = pause_reason(status, body)
            if status == 413 and len(envelopes) > 1:
                # Cut the batch in halves by moving the second half's records to the next batch of this loop.
                self._breaker.succeeded()
                await self._deliver_in_parts(batch, positions)
                continue
            if reason is not None or status == 413:
                metrics.bulk_requests.labels("paused").inc()
                metrics.delivery_pauses.inc()
                self._breaker.failed(reason or "a single event was refused as too large (413): raise the body "
                                     "limit of OpenSearch (http.max_content_length) or of the proxy in front")
                continue
            self._breaker.succeeded()
            await self._settle(batch, positions, classify(envelopes, status, body))

    async def _deliver_in_parts(self, batch: _Batch, positions: list[int]) -> None:
        middle = len(positions) // 2
        for part in (positions[:middle], positions[middle:]):
            # The halves share the batch's attempts and abandoned partitions: a partition revoked while a half
            # is delivered must not be committed by the batch even if it is assigned back before the commit.
            sub = _Batch(batch.messages, {p: batch.waiting[p] for p in part}, batch.attempts,
                         abandoned=batch.abandoned)
            await self._deliver(sub)
            for p in part:
                batch.waiting.pop(p, None)
            batch.letters += sub.letters

    async def _settle(self, batch: _Batch, positions: list[int], outcome) -> None:
        metrics.bulk_requests.labels("failed" if outcome.retry else "rejected" if outcome.rejected else "ok").inc()
        position_of = {id(batch.waiting[p]): p for p in positions}
        for envelope in outcome.delivered:
            del batch.waiting[position_of[id(envelope)]]
        metrics.events_delivered.inc(len(outcome.delivered))
        self.delivered += len(outcome.delivered)
        for failure in outcome.rejected:
            self._to_dead_letter(batch, position_of[id(failure.envelope)], failure.reason)
        if not outcome.retry:
            return
        metrics.events_retried.inc(len(outcome.retry))
        log.warning("%d events kept for retry, first: %s", len(outcome.retry), outcome.retry[0].reason)
        longest = 0
        for failure in outcome.retry:
            position = position_of[id(failure.envelope)]
            attempts = batch.attempts[position] = batch.attempts.get(position, 0) + 1
            if attempts >= self._settings.max_delivery_attempts:
                self._to_dead_letter(batch, position, f"gave up after {attempts} attempts: {failure.reason}")
            else:
                longest = max(longest, attempts)
        if batch.waiting:
            # One wait for the batch: the records are committed together, so none can go ahead of the others.
            await self._wait(backoff_seconds(longest - 1, self._settings.retry_backoff_base_seconds,
                                             self._settings.retry_backoff_max_seconds))

    def _to_dead_letter(self, batch: _Batch, position: int, reason: str) -> None:
        batch.waiting.pop(position, None)
        status = _STATUS.match(reason.split(": ", 1)[-1] if reason.startswith("gave up") else reason)
        batch.letters.append(_Letter(batch.messages[position], reason, status.group(1) if status else "",
                                     batch.attempts.get(position, 0)))

    async def _dead_letter(self, batch: _Batch) -> None:
        """Produce the batch's letters (idempotent, acks=all) and return once the brokers have acknowledged
        every one, since committing past a letter they do not have would lose its event. A letter is waited for
        until its delivery report comes (within message.timeout.ms); one reported failed, or refused by the
        local queue, is produced again after a backoff (1 s doubling to 30 s), for as long as it takes: the
        partitions stay paused and the member stays in the group meanwhile (_keep_alive). A stop during a
        backoff abandons the batch, uncommitted."""
        failures = 0
        while True:
            # Letters of a partition revoked meanwhile are no longer this member's to write: its owner will.
            self._drop_revoked(batch)
            unwritten = [letter for letter in batch.letters if not letter.acknowledged]
            if not unwritten:
                return
            sent = [letter for letter in unwritten if self._produce(letter)]
            while any(letter.in_flight for letter in sent):
                await asyncio.to_thread(self._producer.flush, _KEEP_ALIVE_SECONDS)
            written = [letter for letter in sent if letter.acknowledged]
            if written:
                log.error("%d events dead-lettered to %s, first: %s", len(written), self._dead_letter_topic,
                          written[0].reason)
                metrics.events_dead_lettered.inc(len(written))
                self.dead_lettered += len(written)
            failed = [letter for letter in unwritten if not letter.acknowledged]
            if failed:
                delay = backoff_seconds(failures, 1.0, 30.0)
                failures += 1
                log.error("could not write %d dead letters to %s (%s): the batch is not committed and its "
                          "partitions stay paused; produced again in %.0f s", len(failed), self._dead_letter_topic,
                          failed[0].error.str(), delay)
                await self._wait(delay)

    def _produce(self, letter: _Letter) -> bool:
        """Queue the letter in librdkafka; False (the letter failed, with the error) if the queue refuses it."""
        message = letter.message
        letter.in_flight = True
        try:
            self._producer.produce(self._dead_letter_topic, key=message.key(), value=message.value(),
                                   headers=letter_headers(message, letter.reason, letter.status, letter.attempts),
                                   on_delivery=letter.reported)
        except BufferError as exc:
            letter.in_flight, letter.error = False, KafkaError(KafkaError._QUEUE_FULL, str(exc))
            return False
        except KafkaException as exc:
            if exc.args[0].fatal():
                raise
            letter.in_flight, letter.error = False, exc.args[0]
            return False
        return True

    async def _commit(self, batch: _Batch) -> None:
        """Commit, per partition, the offset after the batch's last record (all of them are settled)."""
        self._drop_revoked(batch)
        last: dict[tuple[str, int], int] = {}
        for message in batch.messages:
            place = (message.topic(), message.partition())
            if place not in self._revoked and place not in batch.abandoned:
                last[place] = max(last.get(place, -1), message.offset())
        if not last:
            return
        offsets = [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]
        try:
            await self._call(self._consumer.commit, offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # The partitions moved on (a rebalance): their next owner re-reads from the last commit; the
            # events are in OpenSearch already and answer 409.
            log.warning("could not commit offsets %s: %s", offsets, exc)

    def _drop_revoked(self, batch: _Batch) -> None:
        """Records of partitions this member lost are its no longer: abandon them, uncommitted."""
        if not self._revoked:
            return
        for position, message in enumerate(batch.messages):
            if (message.topic(), message.partition()) in self._revoked:
                batch.waiting.pop(position, None)
                batch.abandoned.add((message.topic(), message.partition()))
        batch.letters = [letter for letter in batch.letters
                         if (letter.message.topic(), letter.message.partition()) not in self._revoked]

    async def _keep_alive(self) -> None:
        """A batch that waits (breaker open, retry backoff, dead letters not acknowledged yet) pauses the
        partitions, so nothing more is fetched, and polls the consumer: the group drops a member that does not
        poll within max.poll.interval.ms; rebalance callbacks run here too. A batch settled within a second
        pauses nothing, so that librdkafka's prefetch of the next one is kept (a pause discards it)."""
        while True:
            await asyncio.sleep(_KEEP_ALIVE_SECONDS)
            if not self._paused:
                await self._pause()
            message = await self._call(self._consumer.poll, 0)
            if message is not None and message.error() is None:
                # Only a partition assigned during the batch can give one: keep it for the next batch.
                self._carried.append(message)
                await self._call(self._consumer.pause, [TopicPartition(message.topic(), message.partition())])

    async def _pause(self) -> None:
        self._paused = await self._call(self._consumer.assignment)
        if self._paused:
            await self._call(self._consumer.pause, self._paused)

    async def _resume(self) -> None:
        assigned = await self._call(self._consumer.assignment)
        if assigned:
            await self._call(self._consumer.resume, assigned)
        self._paused = []

    async def _wait(self, seconds: float) -> None:
        """Wait between retries; a stop does not wait it out (the batch is then abandoned, uncommitted)."""
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return
        raise _Abandoned()

    async def _permit(self) -> None:
        """The breaker's permission; a stop while it is open abandons the batch at once rather than wait out
        the grace (as serve does while delivery is paused)."""
        if self.stopping.is_set() and self._breaker.is_open:
            raise _Abandoned()
        permit = asyncio.ensure_future(self._breaker.permit())
        stop = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({permit, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if permit not in done:
            permit.cancel()
            raise _Abandoned()

    async def _call(self, function, *args, **kwargs):
        async with self._consumer_lock:
            return await asyncio.to_thread(function, *args, **kwargs)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", _names(partitions))
        for partition in partitions:
            self._revoked.discard((partition.topic, partition.partition))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", _names(partitions))
        self._revoked.update((partition.topic, partition.partition) for partition in partitions)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "none"


async def index(settings: Settings, grace_seconds: float) -> int:
    """Run an indexer until SIGTERM/SIGINT; the batch in progress gets `grace_seconds` to settle and commit,
    then is abandoned uncommitted (its records are read again by the partition's next owner)."""
    import signal

    indexer = Indexer(settings)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop_signal, stop_requested.set)
    runner = asyncio.create_task(indexer.run())
    stop_waiter = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({runner, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
    if runner.done():
        stop_waiter.cancel()
        runner.result()
        return 1
    log.info("stopping: the batch in progress has %.0f s to settle", grace_seconds)
    indexer.stopping.set()
    started = time.monotonic()
    done, _ = await asyncio.wait({runner}, timeout=grace_seconds)
    if not done:
        log.warning("the batch in progress did not settle within %.0f s: abandoned, uncommitted", grace_seconds)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    elif runner.exception() is not None and not isinstance(runner.exception(), asyncio.CancelledError):
        raise runner.exception()
    log.info("stopped in %.1f s", time.monotonic() - started)
    return 0
