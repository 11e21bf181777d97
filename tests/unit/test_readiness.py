"""/readyz's verdict from the collector's state, for the states an integration test cannot easily reach."""

import time

import pytest

from event_collector.api.probes import STORE_FAILURE_HOLD_SECONDS, readiness
from event_collector.envelope import Envelope
from event_collector.exceptions import StoreFull
from event_collector.lifecycle import Collector
from event_collector.settings import load_settings


class Store:
    def __init__(self, full: bool) -> None:
        self.full = full

    def check_room(self) -> None:
        if self.full:
            raise StoreFull("the pending backlog is at its cap of 10 bytes (PENDING_MAX_BYTES)")


def collector(tmp_path, ack_mode: str = "durable", store_full: bool = False, **settings: str) -> Collector:
    made = Collector(load_settings({"DATABASE_URL": f"sqlite://{tmp_path}/p.db", "ACK_MODE": ack_mode,
                                    "QUEUE_CAPACITY": "2", **settings}, env_file=None))
    made.store = Store(store_full)
    made.started = made.accepting = True
    return made


def test_ready_when_started_with_room(tmp_path):
    ready, report = readiness(collector(tmp_path))
    assert ready and report["reasons"] == [] and report["opensearch"] == {"delivery": "flowing"}


def test_not_ready_before_start_up_is_done(tmp_path):
    starting = collector(tmp_path)
    starting.started = starting.accepting = False
    ready, report = readiness(starting)
    assert not ready and report["reasons"][0].startswith("starting")


@pytest.mark.parametrize(("ack_mode", "buffer_full", "ready"), [
    ("durable", False, False), ("durable", True, False), ("memory", False, True), ("memory", True, False)])
def test_a_store_at_its_cap_makes_it_unready_when_new_events_would_need_the_store(tmp_path, ack_mode, buffer_full,
                                                                                  ready):
    at_cap = collector(tmp_path, ack_mode, store_full=True)
    if buffer_full:
        while at_cap.buffer.offer(Envelope("i", "id", b"{}", 0.0)):
            pass
    verdict, report = readiness(at_cap)
    assert verdict is ready
    assert ready or any("PENDING_MAX_BYTES" in reason for reason in report["reasons"])


def test_a_recent_store_failure_makes_it_unready_for_a_while_only(tmp_path):
    failing = collector(tmp_path)
    failing.store_failure = ("disk I/O error", time.monotonic())
    ready, report = readiness(failing)
    assert not ready and "disk I/O error" in report["reasons"][0]
    failing.store_failure = ("disk I/O error", time.monotonic() - STORE_FAILURE_HOLD_SECONDS - 1)
    assert readiness(failing)[0]


def test_paused_delivery_is_reported_and_the_collector_stays_ready(tmp_path):
    paused = collector(tmp_path)
    paused.breaker.failed("OpenSearch unreachable")
    ready, report = readiness(paused)
    assert ready
    assert report["opensearch"] == {"delivery": "paused", "reason": "OpenSearch unreachable"}


def test_a_stop_makes_it_unready(tmp_path):
    stopping = collector(tmp_path)
    stopping.accepting = False
    ready, report = readiness(stopping)
    assert not ready and report["reasons"] == ["shutting down"]
