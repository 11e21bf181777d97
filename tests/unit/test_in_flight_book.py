"""The book of events in flight (in_flight.py): what enters, what leaves, what it remembers, and its bound."""

from event_collector.envelope import Envelope
from event_collector.in_flight import RECENTLY_DELIVERED_SECONDS, InFlightBook
from support import Clock


def envelope(log_id: str) -> Envelope:
    return Envelope("events_t_2026-12", log_id, b'{"log_id":"%s","user_id":"u"}' % log_id.encode(), 1000.0)


def states(book: InFlightBook, *log_ids: str) -> list[str | None]:
    return [None if (found := book.look_up(log_id)) is None else found[0] for log_id in log_ids]


def test_accepted_events_are_in_flight_until_settled_or_delivered():
    book = InFlightBook(10, Clock())
    waiting, stored, delivered = envelope("w"), envelope("s"), envelope("d")
    book.accepted([waiting, stored, delivered])
    assert states(book, "w", "s", "d", "never") == ["in_flight"] * 3 + [None]
    book.settled([stored])
    book.delivered([delivered])
    assert states(book, "w", "s", "d") == ["in_flight", None, "indexed"]
    assert book.look_up("d") == ("indexed", delivered) and len(book) == 1


def test_delivered_events_are_forgotten_after_two_generations():
    clock = Clock()
    book = InFlightBook(10, clock)
    book.delivered([envelope("first")])
    clock.now += RECENTLY_DELIVERED_SECONDS
    book.delivered([envelope("second")])  # a new generation: "first" is in the one before
    assert states(book, "first", "second") == ["indexed", "indexed"]
    clock.now += RECENTLY_DELIVERED_SECONDS
    book.delivered([envelope("third")])
    assert states(book, "first", "second", "third") == [None, "indexed", "indexed"]


def test_a_resend_delivered_while_its_copy_is_in_flight_reads_indexed():
    book = InFlightBook(10, Clock())
    book.accepted([envelope("twice")])
    book.delivered([envelope("twice")])
    book.accepted([envelope("twice")])
    assert states(book, "twice") == ["indexed"]


def test_the_book_holds_at_most_its_capacity_dropping_the_oldest():
    book = InFlightBook(3, Clock())
    book.accepted([envelope(f"e{n}") for n in range(5)])
    assert len(book) == 3
    assert states(book, "e0", "e1", "e2", "e4") == [None, None, "in_flight", "in_flight"]
    book.delivered([envelope(f"d{n}") for n in range(3)])
    book.delivered([envelope("d3")])  # the generation is full: it starts a new one
    book.delivered([envelope("d4")])
    assert states(book, "d0", "d3", "d4") == ["indexed", "indexed", "indexed"]
    book.delivered([envelope(f"x{n}") for n in range(3)])  # a batch goes whole into the generation it starts in
    book.delivered([envelope("y")])
    assert states(book, "d0", "d4", "x2", "y") == [None, "indexed", "indexed", "indexed"]
