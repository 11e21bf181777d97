"""ACK_MODE=kafka's producer: accepted events go to KAFKA_TOPIC, and a request is answered once the brokers
have acknowledged every one of its records (docs/scale.md).

librdkafka (confluent-kafka) does the protocol, batching, idempotence and retries; it is not asyncio-native,
so a poller thread calls `poll()`, which runs the delivery callbacks. Each request's records count down one
`Acknowledgement`; when the last is in, the acknowledgement is done. Waking the event loop from another
thread is the expensive step (docs/kafka-notes.md: a future per record doubled the CPU), so the poller wakes
it once per `poll()` round for every acknowledgement that round completed, never once per record. Many
concurrent requests share librdkafka's produce requests (`linger.ms`), as group commit shares a transaction.

A request waits on a plain asyncio future, so the fast path (api/fastpath.py), which steps the accept
coroutine without a task, works unchanged. No asyncio timeout is needed: librdkafka fails every record it
could not deliver within `message.timeout.ms` (KAFKA_PRODUCE_TIMEOUT_SECONDS) through the same callback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from .. import metrics
from ..envelope import Envelope
from ..exceptions import KafkaUnavailable
from ..settings import Settings
from .config import connection_config
from .records import to_record

log = logging.getLogger(__name__)

# How long one poll() blocks when nothing happens: bounds how soon the thread sees a stop request.
_POLL_SECONDS = 0.2
# Room for what a document adds to the body it came from (copied headers, enrichment, record headers).
_DOCUMENT_OVERHEAD_BYTES = 64 * 1024
# While the brokers are unreachable, how often their metadata is asked for, to notice they are back.
_PROBE_INTERVAL_SECONDS = 1.0


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka's settings for the collector's producer."""
    return {
        **connection_config(settings),
        # Exactly once per partition and in order, whatever librdkafka retries; implies acks=all, which
        # with min.insync.replicas=2 on the topic means a 2xx event is on two brokers at least.
        "enable.idempotence": True,
        "acks": "all",
        "message.timeout.ms": int(settings.kafka_produce_timeout_seconds * 1000),
        # Records of concurrent requests share a produce request; a few ms cost little latency.
        "linger.ms": 2,
        # One record is one event's document: up to MAX_BODY_BYTES and the copied headers. librdkafka's own
        # limit (1,000,000 bytes) would refuse the largest bodies the API accepts.
        "message.max.bytes": max(1_000_000, settings.max_body_bytes + _DOCUMENT_OVERHEAD_BYTES),
        # Java clients' partitioner: a user's events land in the partition any Kafka tool computes for the key.
        "partitioner": "murmur2_random",
    }


class Acknowledgement:
    """The brokers' answer for one request's records: `future` is done when every record is acknowledged
    (result None) or any failed (result: the first error, as text). Counted down in the poller thread."""

    __slots__ = ("future", "remaining", "error", "producer")
    # The poller thread counts down deliveries while the loop thread may take off records it could not queue.
    _lock = threading.Lock()

    def __init__(self, future: asyncio.Future, count: int, producer: "EventProducer") -> None:
        self.future = future
        self.remaining = count
        self.error: str | None = None
        self.producer = producer

    def delivered(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None and self.error is None:
            self.error = error.str()
        self.producer.record_outcome(error is None)
        self.count_down(1)

    def count_down(self, records: int) -> None:
        with self._lock:
            self.remaining -= records
            done = self.remaining == 0
        if done:
            self.producer.completed.append(self)


class EventProducer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic_name
        self._producer = Producer(producer_config(settings), error_cb=self._on_error,
                                  logger=logging.getLogger("event_collector.kafka.librdkafka"))
        # Acknowledgements complete here (in the poller thread's delivery callbacks, or in send() for the
        # records it could not queue); the poller hands them to the loop once per round.
        self.completed: list[Acknowledgement] = []
        self._produced = self._failed = 0
        # Why the brokers cannot be reached (None: they can). Set by librdkafka's "all brokers down", cleared
        # by a delivery or a metadata answer; read by /readyz and by accept, which refuses at once meanwhile.
        self.unreachable: str | None = None
        # A fatal error (librdkafka's idempotence state is broken): this producer takes nothing again.
        self._fatal: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_at: float | None = None
        self._stopped: asyncio.Future | None = None
        self.unflushed = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._probe()  # at once: a wrong address or a missing topic shows in the log and in /readyz from the start
        self._thread = threading.Thread(target=self._poll_loop, name="kafka-poller", daemon=True)
        self._thread.start()

    def send(self, envelopes: list[Envelope]) -> asyncio.Future:
        """Produce the records of one request; the future is done once the brokers took them all (None) or
        any failed (the error). Raises KafkaUnavailable when they cannot even be queued."""
        assert self._loop is not None, "start() first"
        if self.unreachable is not None:
            raise KafkaUnavailable(f"Kafka brokers unreachable: {self.unreachable}")
        future = self._loop.create_future()
        acknowledgement = Acknowledgement(future, len(envelopes), self)
        for queued, envelope in enumerate(envelopes):
            key, value, headers = to_record(envelope)
            try:
                self._producer.produce(self.topic, value, key, headers=headers, on_delivery=acknowledgement.delivered)
            except (BufferError, KafkaException) as exc:
                # Full local queue or a record librdkafka refuses: the request is refused whole. What was
                # queued before it may still reach the topic; the client's resend is indexed once (_id = log_id).
                acknowledgement.error = f"could not queue a record for Kafka: {exc}"
                if queued == 0:
                    raise KafkaUnavailable(acknowledgement.error) from None
                acknowledgement.count_down(len(envelopes) - queued)
                break
        return future

    def record_outcome(self, ok: bool) -> None:
        if ok:
            self._produced += 1
        else:
            self._failed += 1

    def _on_error(self, error: KafkaError) -> None:
        # Served by poll(), in the poller thread. One broker down is librdkafka's business (it moves on to
        # the partition's new leader); all of them down means nothing can be acknowledged now.
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.unreachable is None:
                log.error("Kafka brokers unreachable (%s): new events are answered 503", error.str())
            self.unreachable = error.str()
        elif error.fatal():
            log.critical("Kafka producer failed for good (%s): new events are answered 503 until restart", error.str())
            self._fatal = self.unreachable = f"fatal producer error: {error.str()}"
        else:
            # librdkafka's own log line (the logger given to it) already says it, at its level.
            log.debug("Kafka: %s", error.str())

    def _probe(self) -> None:
        """Ask for the topic's metadata: brokers that answer clear `unreachable`; a missing topic sets it."""
        try:
            metadata = self._producer.list_topics(self.topic, timeout=_PROBE_INTERVAL_SECONDS)
        except KafkaException as exc:
            self.unreachable = self.unreachable or f"no metadata from {self.settings.kafka_bootstrap_servers}: {exc}"
            return
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            self.unreachable = f"topic {self.topic!r}: {topic.error.str() if topic else 'not in the metadata'}"
        elif self.unreachable is not None and self._fatal is None:
            log.info("Kafka brokers reachable again: accepting events")
            self.unreachable = None

    def _poll_loop(self) -> None:
        last_probe = 0.0
        while self._stop_at is None:
            self._producer.poll(_POLL_SECONDS)
            self._hand_over()
            if self.unreachable is not None and time.monotonic() - last_probe >= _PROBE_INTERVAL_SECONDS:
                last_probe = time.monotonic()
                self._probe()
        # Stopping: what librdkafka still holds gets until the deadline (flush serves the callbacks too).
        self.unflushed = self._producer.flush(max(0.0, self._stop_at - time.monotonic()))
        self._hand_over()
        assert self._loop is not None and self._stopped is not None
        self._loop.call_soon_threadsafe(self._stopped.set_result, None)

    def _hand_over(self) -> None:
        """One wake of the event loop for every acknowledgement this round completed, and the counts."""
        if self._produced or self._failed:
            metrics.kafka_records_produced.inc(self._produced)
            metrics.kafka_records_failed.inc(self._failed)
            if self._produced and self._fatal is None:
                self.unreachable = None  # a broker acknowledged: the cluster is there
            self._produced = self._failed = 0
        if self.completed:
            completed, self.completed = self.completed, []
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_resolve, completed)

    async def stop(self, grace_seconds: float) -> int:
        """Flush within `grace_seconds`; returns the records still unacknowledged (their requests got no 2xx)."""
        if self._thread is None or self._stopped is None:
            return 0
        self._stop_at = time.monotonic() + grace_seconds
        await self._stopped
        return self.unflushed


def _resolve(completed: list[Acknowledgement]) -> None:
    for acknowledgement in completed:
        if not acknowledgement.future.done():  # a request cancelled meanwhile (client gone, server stopping)
            acknowledgement.future.set_result(acknowledgement.error)
