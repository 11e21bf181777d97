"""The Collector's delivery policy (delivery.py) applying outcomes to a real SQLite store and the buffer: what is
deleted, kept for later, dead-lettered, put back in memory, and what is counted lost."""

from event_collector.buffer import Buffer
from event_collector.delivery import DeliveryPolicy
from event_collector.envelope import Envelope
from event_collector.exceptions import StoreError
from event_collector.outcomes import Failure, Outcome
from event_collector.pending import SqliteStore


def envelope(n: int) -> Envelope:
    return Envelope("events_t_2026-12", f"id-{n}", b'{"n":%d}' % n, 1000.0 + n)


async def test_each_part_of_an_outcome_reaches_the_store(tmp_path):
    store = SqliteStore(str(tmp_path / "pending.db"), max_attempts=3, backoff_base_seconds=0, backoff_max_seconds=0)
    await store.open()
    try:
        delivered, retried, held, rejected = [envelope(n) for n in range(4)]
        await store.add([delivered, retried, held, rejected], leased=True)
        policy = DeliveryPolicy(store, Buffer(10, 10))
        setback = await policy.apply(Outcome(delivered=[delivered], retry=[Failure(retried, "503 unavailable")],
                                             held=[Failure(held, "sender bug")],
                                             rejected=[Failure(rejected, "400 mapper_parsing_exception")]))
        assert (setback, policy.lost) == (False, 0)
        waiting = {e.log_id: e.attempts for e in await store.claim_due(10)}
        assert waiting == {"id-1": 1, "id-2": 0}  # a failure counts an attempt, a held batch does not
        [letter] = await store.list_dead_letters(None, 10)
        assert (letter.log_id, letter.reason) == ("id-3", "400 mapper_parsing_exception")
        assert (await store.statistics()).rows == 2  # the delivered one is gone
    finally:
        await store.close()


class FailingStore:
    """A store whose every write fails (a full disk, a damaged file): reaches the policy's last resort."""

    async def delivered(self, envelopes: list[Envelope]) -> None:
        raise StoreError("disk I/O error")

    async def retry_later(self, failures: list[Failure], *, count_attempt: bool) -> None:
        raise StoreError("disk I/O error")

    async def dead_letter(self, failures: list[Failure]) -> None:
        raise StoreError("disk I/O error")


async def test_when_the_store_fails_events_go_back_to_the_buffer_and_only_those_with_no_row_and_no_room_are_lost():
    buffer = Buffer(2, 10)
    policy = DeliveryPolicy(FailingStore(), buffer)  # type: ignore[arg-type]
    failures = [Failure(envelope(n), "503") for n in range(4)]
    failures[3].envelope.pending_id = 7  # a row leased to this process: replayed after it ends, not lost
    assert await policy.apply(Outcome(delivered=[envelope(9)], retry=failures[:2],
                                      rejected=failures[2:])) is True
    assert [e.log_id for e in buffer.drain()] == ["id-0", "id-1"]
    assert policy.lost == 1  # id-2: no room in memory, no row
