import logging

from event_collector.logs import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, *args: object, level: int = logging.ERROR, name: str = "event_collector.x"):
    return logging.LogRecord(name, level, __file__, 1, message, args, None)


def test_a_repeated_record_passes_once_per_interval_and_then_says_how_many_were_dropped():
    clock = Clock()
    repeats = RepeatFilter(interval_seconds=10, clock=clock)
    assert repeats.filter(record("store failed for %d events", 1))
    assert not any(repeats.filter(record("store failed for %d events", n)) for n in range(500))
    clock.now = 10.5
    again = record("store failed for %d events", 7)
    assert repeats.filter(again)
    assert again.getMessage() == "store failed for 7 events [500 more like this in the last 10 s]"


def test_different_messages_levels_and_loggers_are_counted_apart():
    repeats = RepeatFilter(interval_seconds=10, clock=Clock())
    assert repeats.filter(record("a"))
    assert repeats.filter(record("b"))
    assert repeats.filter(record("a", level=logging.WARNING))
    assert repeats.filter(record("a", name="event_collector.y"))
    assert not repeats.filter(record("a"))


def test_critical_records_always_pass():
    repeats = RepeatFilter(interval_seconds=10, clock=Clock())
    assert all(repeats.filter(record("LOST %d events", 5, level=logging.CRITICAL)) for _ in range(3))


def test_query_strings_are_redacted_from_access_log_lines():
    from event_collector.logs import QueryRedactingFilter

    line = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/events/beacon?token=a.b.c&x=1", "1.1", 204,
                  name="uvicorn.access")
    assert QueryRedactingFilter().filter(line)
    assert line.getMessage() == '127.0.0.1:5000 - "POST /events/beacon?[redacted] HTTP/1.1" 204'
    plain = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/events", "1.1", 200)
    assert QueryRedactingFilter().filter(plain)
    assert plain.getMessage() == '127.0.0.1:5000 - "POST /events HTTP/1.1" 200'
