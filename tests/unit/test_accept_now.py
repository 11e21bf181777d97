"""Collector.accept_now: the usual request kept without a coroutine (api/fastpath.py), and None, having kept
nothing, whenever `accept` must wait or decide otherwise. A real SQLite store and journal in a temporary
directory."""

import contextlib
import time

import pytest

from event_collector.collecting import CREATED, PENDING
from event_collector.envelope import Envelope
from event_collector.exceptions import StoreFull
from event_collector.lifecycle import Collector
from event_collector.settings import load_settings


def envelope(n: int) -> Envelope:
    return Envelope("events_test_2026-12", f"now-{n}", b'{"log_id":"now-%d"}' % n, time.time())


@contextlib.asynccontextmanager
async def opened(tmp_path, **environ: str):
    """A collector whose store (and journal, in durable mode) is open; no shipper runs."""
    collector = Collector(load_settings({"DATABASE_URL": f"sqlite://{tmp_path}/p.db", **environ}, env_file=None))
    await collector.store.open()
    try:
        yield collector
    finally:
        await collector.store.close()


async def test_memory_mode_with_room_buffers_and_books_the_event(tmp_path):
    async with opened(tmp_path, ACK_MODE="memory") as collector:
        event = envelope(1)
        assert collector.accept_now([event]) == CREATED
        assert collector.buffer.take_batch() == [event]
        assert collector.book.look_up("now-1") == ("in_flight", event)
        assert event.pending_id is None


@pytest.mark.parametrize("mode", ["memory", "durable"])
async def test_a_full_buffer_is_left_to_accept_which_stores_the_event(tmp_path, mode):
    async with opened(tmp_path, ACK_MODE=mode, QUEUE_CAPACITY="1") as collector:
        assert collector.accept_now([envelope(1)]) == CREATED
        late = envelope(2)
        assert collector.accept_now([late]) is None
        assert len(collector.buffer) == 1 and late.pending_id is None and collector.book.look_up("now-2") is None
        assert await collector.accept([late]) == PENDING
        assert late.pending_id is not None and late.pending_id > 0  # a row of the pending table


async def test_a_closed_buffer_is_left_to_accept(tmp_path):
    async with opened(tmp_path, ACK_MODE="memory") as collector:
        collector.buffer.close()
        assert collector.accept_now([envelope(1)]) is None


async def test_durable_mode_writes_the_journal_before_answering(tmp_path):
    async with opened(tmp_path, ACK_MODE="durable") as collector:
        events = [envelope(1), envelope(2)]
        assert collector.accept_now(events[:1]) == CREATED
        assert collector.accept_now(events[1:]) == CREATED
        assert collector.store.journal.unsettled == 2
        assert [event.pending_id for event in events] == [-1, -2]  # journal sequence numbers, negated
        assert collector.buffer.take_batch() == events


async def test_durable_mode_with_full_sync_leaves_the_wait_for_the_fsync_to_accept(tmp_path):
    async with opened(tmp_path, ACK_MODE="durable", SQLITE_SYNCHRONOUS="FULL") as collector:
        event = envelope(1)
        assert collector.accept_now([event]) is None
        assert collector.store.journal.unsettled == 0 and len(collector.buffer) == 0  # nothing written
        assert await collector.accept([event]) == CREATED
        assert collector.store.journal.unsettled == 1 and collector.store.journal.syncs >= 1


async def test_durable_mode_at_the_store_cap_refuses_before_writing(tmp_path):
    async with opened(tmp_path, ACK_MODE="durable", PENDING_MAX_BYTES="1") as collector:
        assert collector.accept_now([envelope(1)]) == CREATED  # the backlog was empty
        with pytest.raises(StoreFull):
            collector.accept_now([envelope(2)])
        assert collector.store.journal.unsettled == 1 and len(collector.buffer) == 1
