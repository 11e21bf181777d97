from event_collector.retry import Backoff, backoff_seconds


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
