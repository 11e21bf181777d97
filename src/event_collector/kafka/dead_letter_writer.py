"""The indexer's writes to the dead-letter topic (KAFKA_DEAD_LETTER_TOPIC): a batch's letters, each written
until the brokers acknowledge it, since committing past a letter they do not have would lose its event.

What a letter holds, and the commands that read the topic, are dead_letter.py's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from confluent_kafka import KafkaError, KafkaException, Producer

from .. import metrics
from ..retry import backoff_seconds
from ..settings import Settings
from .batch import Batch, Letter
from .config import connection_config
from .dead_letter import letter_headers

log = logging.getLogger(__name__)

# How long one flush waits for delivery reports before the letters still in flight are looked at again.
_FLUSH_SECONDS = 1.0
# How long the dead letters of an abandoned batch may take to reach the brokers at exit. Their batch is not
# committed, so the partitions' next owner writes them again anyway: this only saves work, never an event.
_EXIT_FLUSH_SECONDS = 5.0
# A letter is the topic's record plus the dead_letter_* headers (the reason is OpenSearch's, a few hundred bytes).
_LETTER_OVERHEAD_BYTES = 128 * 1024


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


class DeadLetterWriter:
    def __init__(self, settings: Settings, *, drop_revoked: Callable[[Batch], None],
                 wait: Callable[[float], Awaitable[None]]) -> None:
        """`drop_revoked(batch)` drops the records of partitions this member lost; `wait(seconds)` waits
        between two attempts, and raises to abandon the batch when the indexer stops meanwhile."""
        self._settings = settings
        self._topic = settings.kafka_dead_letter_topic_name
        self._drop_revoked = drop_revoked
        self._wait = wait
        self.producer: Producer | None = None
        self.written = 0

    def open(self) -> None:
        self.producer = Producer(producer_config(self._settings), logger=log)

    async def close(self) -> int:
        """Give the letters still queued a last chance to reach the brokers; returns how many did not."""
        unsent = await asyncio.to_thread(self.producer.flush, _EXIT_FLUSH_SECONDS)
        if unsent:
            log.warning("%d dead letters not acknowledged at exit: their batch was not committed, so the "
                        "partitions' next owner dead-letters those records again", unsent)
        return unsent

    async def write(self, batch: Batch) -> None:
        """Produce the batch's letters (idempotent, acks=all) and return once the brokers have acknowledged
        every one. A letter is waited for until its delivery report comes (within message.timeout.ms); one
        reported failed, or refused by the local queue, is produced again after a backoff (1 s doubling to
        30 s), for as long as it takes: the partitions stay paused and the member stays in the group meanwhile
        (membership.py, `keep_alive`). A stop during a backoff abandons the batch, uncommitted."""
        failures = 0
        while True:
            # Letters of a partition revoked meanwhile are no longer this member's to write: its owner will.
            self._drop_revoked(batch)
            unwritten = [letter for letter in batch.letters if not letter.acknowledged]
            if not unwritten:
                return
            sent = [letter for letter in unwritten if self._produce(letter)]
            while any(letter.in_flight for letter in sent):
                await asyncio.to_thread(self.producer.flush, _FLUSH_SECONDS)
            written = [letter for letter in sent if letter.acknowledged]
            if written:
                log.error("%d events dead-lettered to %s, first: %s", len(written), self._topic, written[0].reason)
                metrics.events_dead_lettered.inc(len(written))
                self.written += len(written)
            failed = [letter for letter in unwritten if not letter.acknowledged]
            if failed:
                delay = backoff_seconds(failures, 1.0, 30.0)
                failures += 1
                log.error("could not write %d dead letters to %s (%s): the batch is not committed and its "
                          "partitions stay paused; produced again in %.0f s", len(failed), self._topic,
                          failed[0].error.str(), delay)
                await self._wait(delay)

    def _produce(self, letter: Letter) -> bool:
        """Queue the letter in librdkafka; False (the letter failed, with the error) if the queue refuses it."""
        message = letter.message
        letter.in_flight = True
        try:
            self.producer.produce(self._topic, key=message.key(), value=message.value(),
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
