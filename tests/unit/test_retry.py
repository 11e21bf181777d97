import asyncio

import pytest

from event_collector.retry import Backoff, Breaker, backoff_seconds, pause_reason


def test_the_delay_doubles_up_to_the_cap_with_jitter_over_the_upper_half():
    for attempts, ceiling in [(0, 1), (1, 2), (3, 8), (10, 600), (10_000, 600)]:
        delays = [backoff_seconds(attempts, 1.0, 600.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > 0


def test_a_backoff_grows_with_each_failure_and_starts_over_after_a_success():
    backoff = Backoff(base_seconds=0.5, max_seconds=10.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays[0] <= 0.5 and delays[3] >= 2.0 and delays[-1] <= 10.0
    backoff.reset()
    assert backoff.next_delay() <= 0.5


@pytest.mark.parametrize(("status", "pauses"), [
    (200, False), (400, False), (409, False), (413, False),
    (401, True), (403, True), (404, True), (408, True), (429, True), (500, True), (501, True), (502, True), (503, True),
    (507, True),
])
def test_whole_request_answers_that_are_not_the_events_fault_pause_delivery(status, pauses):
    # OpenSearch's own answers are JSON objects.
    assert (pause_reason(status, {"error": {"type": "x"}}) is not None) == pauses


@pytest.mark.parametrize("body", ["<html><center>400 No required SSL certificate was sent</center></html>", None])
def test_a_4xx_that_is_not_opensearch_s_json_is_a_proxy_refusing_and_pauses(body):
    assert "OPEN_SEARCH_CLIENT_CERT" in pause_reason(400, body)
    assert pause_reason(400, {"error": {"type": "parse_exception"}}) is None
    assert pause_reason(413, body) is None  # split, not paused


def test_a_misconfiguration_names_what_to_check():
    assert "OPEN_SEARCH_DNS" in pause_reason(401)
    assert "permissions" in pause_reason(403)


async def test_a_closed_breaker_lets_every_request_go():
    breaker = Breaker(base_seconds=10, max_seconds=10)
    await asyncio.wait_for(asyncio.gather(*(breaker.permit() for _ in range(5))), 1)
    assert not breaker.is_open


async def test_an_open_breaker_lets_one_probe_through_after_the_delay_and_everyone_once_it_succeeds():
    breaker = Breaker(base_seconds=0.05, max_seconds=0.05)
    breaker.failed("down")
    assert breaker.is_open
    waiters = [asyncio.ensure_future(breaker.permit()) for _ in range(4)]
    done, pending = await asyncio.wait(waiters, timeout=1, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1  # the probe
    await asyncio.sleep(0.2)
    assert sum(w.done() for w in waiters) == 1  # no second probe while the first has not answered
    breaker.succeeded()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert not breaker.is_open and breaker.recovered.is_set()


async def test_a_failed_probe_waits_longer_and_an_abandoned_one_lets_another_try():
    breaker = Breaker(base_seconds=0.05, max_seconds=0.4)
    breaker.failed("down")
    await asyncio.wait_for(breaker.permit(), 1)
    breaker.abandoned()
    await asyncio.wait_for(breaker.permit(), 1)
    breaker.failed("still down")
    breaker.failed("still down")
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(breaker.permit(), 2)
    assert asyncio.get_running_loop().time() - started >= 0.05  # at least the third delay's lower half
