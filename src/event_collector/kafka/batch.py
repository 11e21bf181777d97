"""One batch of the indexer's records while it is settled: the records that still wait for OpenSearch, the
letters bound for the dead-letter topic (with the brokers' word on each) and the partitions it gave up.

The consumer's side (membership.py), the dead-letter writer (dead_letter_writer.py) and the delivery loop
(indexer.py) each change a part of it; the batch is committed once nothing waits and every letter is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message

from ..envelope import Envelope

# OpenSearch's item status, where a refusal's reason starts with one.
_STATUS = re.compile(r"^(\d{3})\b")


class Letter:
    """One record bound for the dead-letter topic, and what the brokers said about it: written only once its
    delivery report says so (no report yet is not an acknowledgement)."""

    __slots__ = ("message", "reason", "status", "attempts", "in_flight", "acknowledged", "error")

    def __init__(self, message: Message, reason: str, status: str, attempts: int) -> None:
        self.message, self.reason, self.status, self.attempts = message, reason, status, attempts
        self.in_flight = False
        self.acknowledged = False
        self.error: KafkaError | None = None

    def reported(self, error: KafkaError | None, _message: Message | None) -> None:
        """librdkafka's delivery report, in the thread that flushes."""
        self.error = error
        self.acknowledged = error is None
        self.in_flight = False


@dataclass
class Batch:
    messages: list[Message]
    # The records still to deliver and the attempts each used, by position in `messages`.
    waiting: dict[int, Envelope] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    # The records that go to the dead-letter topic.
    letters: list[Letter] = field(default_factory=list)
    # Partitions whose records this member gave up during the batch (revoked): never committed by it.
    abandoned: set[tuple[str, int]] = field(default_factory=set)

    def give_up(self, position: int, reason: str) -> None:
        """The record at `position` goes to the dead-letter topic instead of OpenSearch."""
        self.waiting.pop(position, None)
        status = _STATUS.match(reason.split(": ", 1)[-1] if reason.startswith("gave up") else reason)
        self.letters.append(Letter(self.messages[position], reason, status.group(1) if status else "",
                                   self.attempts.get(position, 0)))
