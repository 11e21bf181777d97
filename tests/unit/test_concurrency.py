"""The concurrency controller: more bulks in flight while OpenSearch keeps its latency, fewer when it slows
down or pushes back, always within [1, BULK_WORKERS]."""

from event_collector.shipper.concurrency import AdaptiveConcurrency


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def busy_window(controller: AdaptiveConcurrency, clock: Clock, latency: float, pushback: bool = False) -> None:
    """One window in which every allowed request was out at once and each took `latency`."""
    for n in range(controller.limit):
        controller.started(n + 1)
    clock.now += latency
    for _ in range(controller.limit):
        controller.observe(latency, pushback)


def test_starts_at_one_and_grows_by_one_per_window_while_latency_holds():
    clock = Clock()
    controller = AdaptiveConcurrency(8, clock=clock)
    assert controller.limit == 1
    limits = []
    for _ in range(5):
        busy_window(controller, clock, 0.2)
        limits.append(controller.limit)
    assert limits == [2, 3, 4, 5, 6]


def test_never_exceeds_the_number_of_senders():
    clock = Clock()
    controller = AdaptiveConcurrency(3, clock=clock)
    for _ in range(20):
        busy_window(controller, clock, 0.2)
    assert controller.limit == 3


def test_a_limit_that_is_not_used_does_not_grow():
    clock = Clock()
    controller = AdaptiveConcurrency(8, clock=clock)
    busy_window(controller, clock, 0.2)
    for _ in range(10):  # one request at a time: a quiet pipeline
        controller.started(1)
        clock.now += 0.2
        controller.observe(0.2, False)
    assert controller.limit == 2


def test_pushback_cuts_the_limit_at_once():
    clock = Clock()
    controller = AdaptiveConcurrency(10, clock=clock)
    for _ in range(9):
        busy_window(controller, clock, 0.2)
    assert controller.limit == 10
    controller.started(10)
    controller.observe(0.01, pushback=True)  # within the window: no need to wait for its end
    assert controller.limit == 9
    busy_window(controller, clock, 0.2, pushback=True)
    assert controller.limit < 9
    for _ in range(30):
        busy_window(controller, clock, 0.2, pushback=True)
    assert controller.limit == 1


def test_a_clear_rise_in_latency_cuts_the_limit_and_a_small_one_does_not():
    clock = Clock()
    controller = AdaptiveConcurrency(10, clock=clock)
    for _ in range(5):
        busy_window(controller, clock, 0.2)
    assert controller.limit == 6
    busy_window(controller, clock, 0.25)  # noise: still grows
    assert controller.limit == 7
    busy_window(controller, clock, 0.6)  # OpenSearch queues the requests: fewer go
    assert controller.limit == 6


def test_unanswered_requests_say_nothing_about_latency():
    clock = Clock()
    controller = AdaptiveConcurrency(10, clock=clock)
    for _ in range(3):
        busy_window(controller, clock, 0.2)
    clock.now += 1
    controller.observe(None, pushback=False)  # closes the window the last answers fell in
    limit = controller.limit
    controller.started(limit)
    clock.now += 5
    controller.observe(None, pushback=False)  # e.g. a 413: no latency, no pushback
    assert controller.limit == limit


def test_fixed_keeps_every_sender_busy_whatever_happens():
    clock = Clock()
    controller = AdaptiveConcurrency(10, adaptive=False, clock=clock)
    assert controller.limit == 10
    busy_window(controller, clock, 5.0, pushback=True)
    assert controller.limit == 10


def test_the_limit_is_shown_in_the_metrics():
    from event_collector import metrics

    clock = Clock()
    controller = AdaptiveConcurrency(8, clock=clock)
    busy_window(controller, clock, 0.2)
    busy_window(controller, clock, 0.2)
    assert metrics.bulk_concurrency._value.get() == controller.limit == 3
    controller.bound(2)
    assert metrics.bulk_concurrency._value.get() == controller.limit == 2
