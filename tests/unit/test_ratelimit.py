from event_collector.api.ratelimit import UserRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_user_gets_the_burst_then_the_rate():
    clock = Clock()
    limiter = UserRateLimiter(2.0, burst=10, clock=clock)
    assert limiter.take("a", 8) == 8
    assert limiter.take("a", 8) == 2
    assert limiter.take("a", 1) == 0
    assert limiter.retry_after_seconds("a") == 1
    clock.now += 1.5
    assert limiter.take("a", 5) == 3


def test_one_user_over_the_limit_leaves_the_others_alone():
    limiter = UserRateLimiter(1.0, burst=3, clock=Clock())
    assert limiter.take("noisy", 100) == 3
    assert limiter.take("noisy", 1) == 0
    assert limiter.take("quiet", 1) == 1


def test_the_burst_is_at_least_one_second_of_the_rate():
    limiter = UserRateLimiter(50.0, burst=0, clock=Clock())
    assert limiter.take("a", 100) == 50


def test_retry_after_says_when_one_event_fits_again():
    clock = Clock()
    limiter = UserRateLimiter(0.1, burst=1, clock=clock)
    assert limiter.take("a", 1) == 1
    assert limiter.retry_after_seconds("a") == 10
    clock.now += 4
    assert limiter.retry_after_seconds("a") == 6


def test_idle_users_are_forgotten_once_there_are_many():
    clock = Clock()
    limiter = UserRateLimiter(100.0, burst=100, clock=clock)
    for n in range(10_000):
        limiter.take(f"old-{n}", 1)
    clock.now += 5  # every bucket has refilled: they carry no information any more
    limiter.take("new", 1)
    assert len(limiter) == 1
