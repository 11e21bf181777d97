"""What the SQLite store tells receipts (pending/lookup.py), and the delivery policy keeping the book of events
in flight (in_flight.py) in step with the store: an event leaves the book only once the store holds it."""

from event_collector.buffer import Buffer
from event_collector.delivery import DeliveryPolicy
from event_collector.envelope import DocumentOwner, Envelope
from event_collector.in_flight import InFlightBook
from event_collector.outcomes import Failure, Outcome
from event_collector.pending import SqliteStore, lookup
from support import Clock, query, write_store_of_schema_2
from test_delivery_policy import FailingStore


def envelope(log_id: str, user: str = "u1") -> Envelope:
    return Envelope("events_t_2026-12", log_id, b'{"log_id":"%s","user_id":"%s"}' % (log_id.encode(), user.encode()),
                    1000.0)


async def test_pending_rows_and_dead_letters_are_found_by_log_id_with_their_owner(tmp_path):
    clock = Clock(2_000_000_000.0)
    store = SqliteStore(str(tmp_path / "pending.db"), max_attempts=5, backoff_base_seconds=10,
                        backoff_max_seconds=10, clock=clock)
    await store.open()
    try:
        waiting, refused, flying = envelope("waiting"), envelope("refused", "u2"), envelope("flying")
        await store.add([waiting, refused, flying], leased=True)
        await store.retry_later([Failure(waiting, "503 unavailable")], count_attempt=True)
        await store.dead_letter([Failure(refused, "400 mapper_parsing_exception")])
        found = await store.receipts(["waiting", "refused", "flying", "never"])
        assert set(found.pending) == {"waiting"} and set(found.dead_letters) == {"refused"}
        row = found.pending["waiting"]
        assert (row.owner, row.attempts, row.last_error) == (DocumentOwner("u1"), 1, "503 unavailable")
        assert clock.now < row.next_attempt_at <= clock.now + 10 * 1.5  # backoff of 10 s, with jitter
        letter = found.dead_letters["refused"]
        assert (letter.owner, letter.reason, letter.failed_at) == (DocumentOwner("u2"), "400 mapper_parsing_exception",
                                                                   clock.now)
    finally:
        await store.close()


async def test_the_lookups_use_the_log_id_indices_and_sort_nothing(tmp_path):
    path = tmp_path / "pending.db"
    store = SqliteStore(str(path))
    await store.open()
    await store.close()
    for sql, index in ((lookup.PENDING_QUERY, "pending_log_id"), (lookup.DEAD_LETTER_QUERY, "dead_letter_log_id")):
        plan = " ".join(row[-1] for row in query(path, f"EXPLAIN QUERY PLAN {sql}", '["a", "b"]'))
        assert f"USING INDEX {index} (log_id=?)" in plan and "TEMP B-TREE" not in plan, plan


async def test_a_store_of_an_earlier_schema_gets_the_indices_and_its_rows_are_found(tmp_path):
    path = tmp_path / "pending.db"
    write_store_of_schema_2(path, [("old-row", "events_t_2026-12", b'{"user_id":"u1"}', 1000.0, 3, 1500.0, None,
                                    "503 unavailable")])
    store = SqliteStore(str(path))
    await store.open()
    try:
        found = await store.receipts(["old-row"])
        assert (found.pending["old-row"].attempts, found.pending["old-row"].owner) == (3, DocumentOwner("u1"))
    finally:
        await store.close()
    indices = {name for (name,) in query(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"pending_log_id", "dead_letter_log_id"} <= indices


async def test_of_several_rows_of_one_log_id_the_newest_answers(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"), max_attempts=5)
    await store.open()
    try:
        first, resent = envelope("twice"), envelope("twice")
        await store.add([first], leased=False)
        await store.add([resent], leased=True)
        await store.retry_later([Failure(resent, "429 too many requests")], count_attempt=True)
        found = await store.receipts(["twice"])
        assert (found.pending["twice"].attempts, found.pending["twice"].last_error) == (1, "429 too many requests")
    finally:
        await store.close()


async def test_the_book_lets_go_of_an_event_only_once_the_store_holds_it(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"))
    await store.open()
    try:
        book = InFlightBook(10, Clock())
        events = [envelope(name) for name in ("delivered", "retried", "held", "rejected")]
        await store.add(events, leased=True)
        book.accepted(events)
        policy = DeliveryPolicy(store, Buffer(10, 10), book)
        delivered, retried, held, rejected = events
        await policy.apply(Outcome(delivered=[delivered], retry=[Failure(retried, "503")],
                                   held=[Failure(held, "sender bug")], rejected=[Failure(rejected, "400")]))
        assert [book.look_up(e.log_id) for e in events] == [("indexed", delivered), None, None, None]
    finally:
        await store.close()


async def test_events_the_store_could_not_take_stay_in_flight():
    book = InFlightBook(10, Clock())
    retried, rejected = envelope("retried"), envelope("rejected")
    book.accepted([retried, rejected])
    policy = DeliveryPolicy(FailingStore(), Buffer(10, 10), book)  # type: ignore[arg-type]
    await policy.apply(Outcome(retry=[Failure(retried, "503")], rejected=[Failure(rejected, "400")]))
    assert [book.look_up(e.log_id)[0] for e in (retried, rejected)] == ["in_flight", "in_flight"]
