"""`event-collector index`: a member of the consumer group KAFKA_GROUP_ID that bulk-indexes the topic's events.

One batch at a time: consume up to BULK_SIZE records, deliver every event (the serve path's bulk body,
`_id`, classification and breaker: shipper/bulk.py, shipper/client.py, retry.py), dead-letter the refused
ones to KAFKA_DEAD_LETTER_TOPIC, then commit the batch's offsets synchronously, and only then consume the
next batch. An offset is therefore committed only once every record before it is in
OpenSearch or in the dead-letter topic; a crash at any point re-reads from the last commit, and the
re-sent `create`s answer 409, counted as delivered (exactly once in OpenSearch).

While OpenSearch does not take requests the breaker holds the batch and the partitions are paused; the
consumer is polled meanwhile so that the group keeps it as a member (max.poll.interval.ms). Partitions
revoked during a batch (a rebalance) are dropped from it and never committed by this member: their new
owner reads them again from the last commit. Which member owns which partition is Kafka's group protocol.
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
    return {**connection_config(settings), "enable.idempotence": True, "acks": "all", "linger.ms": 5}


@dataclass
class _Batch:
    messages: list[Message]
    # The records still to deliver and the attempts each used, by position in `messages`.
    waiting: dict[int, Envelope] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    # (position, reason, status) of each record that goes to the dead-letter topic.
    letters: list[tuple[int, str, str]] = field(default_factory=list)
    # Partitions whose records this member gave up during the batch (revoked): never committed by it.
    abandoned: set[tuple[str, int]] = field(default_factory=set)


class _Abandoned(Exception):
    """The indexer stops while the batch waits for OpenSearch or a retry: it is left uncommitted."""


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
                    try:
                        await self._index(messages)
                    except _Abandoned:
                        log.warning("stopping: the batch in progress is abandoned, uncommitted (its records are "
                                    "read again by the partitions' next owner)")
        finally:
            template.cancel()
            # Leaving the group hands its partitions over at once; nothing uncommitted is committed.
            await asyncio.to_thread(self._consumer.close)
            self._producer.flush(5)
            await self._client.close()
            log.info("indexer stopped: %d events delivered, %d dead-lettered", self.delivered, self.dead_lettered)

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
                batch.letters.append((position, str(exc), ""))
        return batch

    async def _deliver(self, batch: _Batch) -> None:
        """Return when every record is delivered or bound for the dead-letter topic; the breaker holds the
        batch while OpenSearch does not take requests."""
        while batch.waiting:
            self._drop_revoked(batch)
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
            sub = _Batch(batch.messages, {p: batch.waiting[p] for p in part}, batch.attempts)
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
        batch.letters.append((position, reason, status.group(1) if status else ""))

    async def _dead_letter(self, batch: _Batch) -> None:
        """Produce the batch's letters and wait for the brokers to acknowledge each (idempotent, acks=all)
        before the commit; retried until they are, since committing past an unwritten letter would lose it."""
        self._drop_revoked(batch)
        letters = [(batch.messages[p], reason, status, batch.attempts.get(p, 0)) for p, reason, status in batch.letters]
        delay = 0
        while letters:
            failed: list = []
            for message, reason, status, attempts in letters:
                headers = letter_headers(message, reason, status, attempts)
                self._producer.produce(self._dead_letter_topic, key=message.key(), value=message.value(),
                                       headers=headers,
                                       on_delivery=lambda err, _m, entry=(message, reason, status, attempts):
                                       err and failed.append((entry, err)))
            await asyncio.to_thread(self._producer.flush, self._settings.kafka_produce_timeout_seconds)
            done = len(letters) - len(failed)
            if done:
                log.error("%d events dead-lettered to %s, first: %s", done, self._dead_letter_topic, letters[0][1])
                metrics.events_dead_lettered.inc(done)
                self.dead_lettered += done
            if not failed:
                return
            log.error("could not write %d dead letters to %s (%s): retrying; the batch is not committed",
                      len(failed), self._dead_letter_topic, failed[0][1])
            letters = [entry for entry, _err in failed]
            await self._wait(backoff_seconds(delay, 1.0, 30.0))
            delay += 1

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
        batch.letters = [entry for entry in batch.letters
                         if (batch.messages[entry[0]].topic(), batch.messages[entry[0]].partition())
                         not in self._revoked]

    async def _keep_alive(self) -> None:
        """A batch that waits (breaker open, retry backoff) pauses the partitions, so nothing more is fetched,
        and polls the consumer: the group drops a member that does not poll within max.poll.interval.ms;
        rebalance callbacks run here too. A batch settled within a second pauses nothing, so that librdkafka's
        prefetch of the next one is kept (a pause discards it)."""
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
