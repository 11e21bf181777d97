"""`event-collector index`: a member of the consumer group KAFKA_GROUP_ID that bulk-indexes the topic's events.

One batch at a time: consume up to BULK_SIZE records, deliver every event (the serve path's bulk body,
`_id`, classification and breaker: shipper/bulk.py, shipper/client.py, retry.py), dead-letter the refused
ones to KAFKA_DEAD_LETTER_TOPIC and wait until the brokers have acknowledged each letter, then commit the
batch's offsets synchronously, and only then consume the next batch. An offset is therefore committed only
once every record before it is in OpenSearch or in the dead-letter topic; a crash at any point re-reads from
the last commit, and the re-sent `create`s answer 409, counted as delivered (exactly once in OpenSearch).

While OpenSearch does not take requests, or the dead-letter topic does not take the letters, the batch is
held and the partitions are paused. Here are the command and its delivery loop; membership.py has the
consumer's side (reading, partitions, commits), dead_letter_writer.py the writing of letters, and batch.py
what a batch holds while it is settled.
"""

from __future__ import annotations

import asyncio
import logging
import time

from confluent_kafka import Message

from .. import metrics
from ..exceptions import ConfigError, OpenSearchUnavailable
from ..outcomes import count_dead_letters
from ..retry import Breaker, backoff_seconds, pause_reason
from ..rules.book import Rules
from ..settings import Settings
from ..shipper.bulk import bulk_body, classify
from ..shipper.client import OpenSearchClient
from ..shipper.template import TemplateGuard
from ..sources import Sources
from .batch import Batch
from .dead_letter_writer import DeadLetterWriter
from .membership import GroupMember

log = logging.getLogger(__name__)


class _Abandoned(Exception):
    """The indexer stops while the batch waits for OpenSearch, a retry or its dead letters: it is left
    uncommitted."""


class Indexer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = OpenSearchClient.from_settings(settings, max_connections=4)
        self._template = TemplateGuard(self._client, settings.server_environment)
        # RULES_FILE's typed fields (docs/rules.md), for the templates: the collectors judged the events already.
        self._rules = Rules(settings.rules_file, settings.rules_hash_key) if settings.rules_file else None
        self._sources = Sources(settings.sources_file, settings.server_environment)
        self._typed_fields_to_templates()
        self._breaker = Breaker()
        self._member = GroupMember(settings)
        self._letters = DeadLetterWriter(settings, drop_revoked=self._member.drop_revoked, wait=self._wait)
        self.stopping = asyncio.Event()
        self.delivered = 0

    @property
    def dead_lettered(self) -> int:
        return self._letters.written

    async def run(self) -> None:
        await self._client.open()
        self._member.join()
        self._letters.open()
        log.info("indexing topic %s in group %s into OpenSearch", self._settings.kafka_topic_name,
                 self._settings.kafka_group)
        # The template before the first event, as serve does: an index created meanwhile gets its mappings.
        template = asyncio.create_task(self._template.install_in_background())
        try:
            while not self.stopping.is_set():
                messages = await self._member.consume()
                if messages:
                    await self._index(messages)
        finally:
            template.cancel()
            await self._member.leave()
            unsent = await self._letters.close()
            await self._client.close()
            log.info("indexer stopped: %d events delivered, %d dead-lettered, %d dead letters not acknowledged "
                     "at exit", self.delivered, self.dead_lettered, unsent)

    async def _index(self, messages: list[Message]) -> None:
        batch = self._member.batch(messages)
        if not batch.messages:
            return
        started = time.perf_counter()
        keep_alive = asyncio.create_task(self._member.keep_alive())
        try:
            await self._deliver(batch)
            await self._letters.write(batch)
            await self._member.commit(batch)
        except _Abandoned:
            unwritten = sum(not letter.acknowledged for letter in batch.letters)
            log.warning("stopping: the batch in progress is abandoned, uncommitted, %d of its dead letters not "
                        "acknowledged by the brokers (its records are read again by the partitions' next owner)",
                        unwritten)
            return
        finally:
            keep_alive.cancel()
            await asyncio.gather(keep_alive, return_exceptions=True)
            await self._member.resume()
        log.debug("a batch of %d records settled in %.3f s", len(batch.messages), time.perf_counter() - started)

    def _typed_fields_to_templates(self) -> None:
        if self._rules is not None:
            mappings = self._rules.book.typed_mappings(self._sources.book, self._settings.server_environment)
            self._template.set_own_fields(mappings)

    def _read_rules_again(self) -> None:
        """RULES_FILE (or SOURCES_FILE) changed: the typed fields of the new reading go to the templates; a bad
        file keeps the last good one."""
        assert self._rules is not None
        self._sources.reload()
        try:
            self._rules.adopt(self._rules.read())
        except ConfigError as exc:
            log.error(f"{exc}; the typed fields in force stay")
        self._typed_fields_to_templates()

    async def _deliver(self, batch: Batch) -> None:
        """Return when every record is delivered or bound for the dead-letter topic; the breaker holds the
        batch while OpenSearch does not take requests."""
        while batch.waiting:
            self._member.drop_revoked(batch)
            if not batch.waiting:
                return
            positions = list(batch.waiting)
            envelopes = [batch.waiting[p] for p in positions]
            await self._permit()
            if self._rules is not None and (self._rules.changed() or self._sources.changed()):
                self._read_rules_again()
            try:
                await self._template.ensure(envelope.index for envelope in envelopes)
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

    async def _deliver_in_parts(self, batch: Batch, positions: list[int]) -> None:
        middle = len(positions) // 2
        for part in (positions[:middle], positions[middle:]):
            # The halves share the batch's attempts and abandoned partitions: a partition revoked while a half
            # is delivered must not be committed by the batch even if it is assigned back before the commit.
            sub = Batch(batch.messages, {p: batch.waiting[p] for p in part}, batch.attempts,
                         abandoned=batch.abandoned)
            await self._deliver(sub)
            for p in part:
                batch.waiting.pop(p, None)
            batch.letters += sub.letters

    async def _settle(self, batch: Batch, positions: list[int], outcome) -> None:
        metrics.bulk_requests.labels("failed" if outcome.retry else "rejected" if outcome.rejected else "ok").inc()
        position_of = {id(batch.waiting[p]): p for p in positions}
        for envelope in outcome.delivered:
            del batch.waiting[position_of[id(envelope)]]
        metrics.events_delivered.inc(len(outcome.delivered))
        # From the record's received_at header: the collector's 2xx, so the lag includes the time in the topic.
        metrics.observe_delivery_lag(envelope.received_at for envelope in outcome.delivered)
        self.delivered += len(outcome.delivered)
        count_dead_letters(outcome.rejected)
        for failure in outcome.rejected:
            batch.give_up(position_of[id(failure.envelope)], failure.reason)
        if not outcome.retry:
            return
        metrics.events_retried.inc(len(outcome.retry))
        log.warning("%d events kept for retry, first: %s", len(outcome.retry), outcome.retry[0].reason)
        longest = 0
        for failure in outcome.retry:
            position = position_of[id(failure.envelope)]
            attempts = batch.attempts[position] = batch.attempts.get(position, 0) + 1
            if attempts >= self._settings.max_delivery_attempts:
                metrics.dead_letters.labels("attempts_exhausted").inc()
                batch.give_up(position, f"gave up after {attempts} attempts: {failure.reason}")
            else:
                longest = max(longest, attempts)
        if batch.waiting:
            # One wait for the batch: the records are committed together, so none can go ahead of the others.
            await self._wait(backoff_seconds(longest - 1, self._settings.retry_backoff_base_seconds,
                                             self._settings.retry_backoff_max_seconds))

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
