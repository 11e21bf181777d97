"""Whole-request answers that are not the events' fault, from a real nginx in front of OpenSearch:
a 401 pauses delivery without burning attempts; a 413 splits the batch."""

import sqlite3

import msgspec
import pytest

from support import Nginx, assert_delivered_exactly_once, event, journal_events, metric, wait_until


@pytest.fixture
def nginx(tmp_path):
    proxy = Nginx(tmp_path)
    yield proxy
    proxy.stop()


def attempts(collector) -> set[int]:
    """The attempt counts of the stored events; an event in flight (in the journal) was never tried: 0."""
    with sqlite3.connect(collector.database) as connection:
        counts = {n for (n,) in connection.execute("SELECT DISTINCT attempts FROM pending")}
    return counts | ({0} if journal_events(collector.database) else set())


def test_a_401_pauses_delivery_without_burning_attempts_until_the_setting_is_fixed(collector_factory, opensearch,
                                                                                   nginx):
    nginx.start(require_password=True)
    collector = collector_factory(OPEN_SEARCH_DNS=nginx.url, MAX_DELIVERY_ATTEMPTS=2, BULK_SIZE=50)
    events = [event() for _ in range(200)]
    assert {collector.post_event(e).status_code for e in events} == {200}
    wait_until(lambda: metric(collector, "event_collector_delivery_pauses_total") >= 3, timeout=90,
               message="several requests answered 401")
    assert "(401): check OPEN_SEARCH_USERNAME and OPEN_SEARCH_PASSWORD" in collector.log()
    assert metric(collector, "event_collector_delivery_paused") == 1
    assert collector.dead_letters() == []
    assert attempts(collector) == {0}

    nginx.configure(require_password=False)  # the operator fixes the credentials
    assert_delivered_exactly_once("401 from a proxy, then fixed", [e["log_id"] for e in events], opensearch,
                                  collector.environment, fault="opensearch_misconfigured", ack_mode="durable",
                                  settings=collector.report_settings("MAX_DELIVERY_ATTEMPTS"))
    wait_until(lambda: metric(collector, "event_collector_delivery_paused") == 0, timeout=30)
    assert collector.dead_letters() == []


def test_a_413_from_a_proxy_splits_the_batches_until_they_pass(collector_factory, opensearch, nginx):
    nginx.start(max_body="64k")
    collector = collector_factory(OPEN_SEARCH_DNS=nginx.url, MAX_DELIVERY_ATTEMPTS=2, BULK_SIZE=1000,
                                  FLUSH_INTERVAL_SECONDS=1)
    events = [event(param={"padding": "p" * 500}) for _ in range(1000)]
    response = collector.http.post("/events/batch", content=msgspec.json.encode(events), headers=collector.auth())
    assert response.json()["accepted"] == 1000
    assert_delivered_exactly_once("413 from a proxy's body limit", [e["log_id"] for e in events], opensearch,
                                  collector.environment, fault="opensearch_misconfigured", ack_mode="durable",
                                  settings=collector.report_settings("BULK_SIZE"))
    assert metric(collector, "event_collector_bulk_requests_total", result="too_large") >= 1
    assert "batches are now cut at" in collector.log()
    assert collector.dead_letters() == []
