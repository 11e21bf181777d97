"""The collector of ACK_MODE=kafka: stateless. No pending store, no buffer, no OpenSearch shipper in this
process; a 2xx means the Kafka brokers acknowledged every event of the request (`acks=all`), and the
indexers (`event-collector index`) take them from there (docs/scale.md).

It has the surface the API uses (api/app.py, api/fastpath.py, api/probes.py): `accept`, `accepting`,
`started`, `stopping`, `store_failure`, `stopped_cleanly`, `watch_stop_signals`, `start`, `stop`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..envelope import Envelope
from ..exceptions import KafkaUnavailable
from ..collecting import CREATED, StopSignals
from ..settings import Settings
from .producer import EventProducer

log = logging.getLogger(__name__)


class KafkaCollector(StopSignals):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.producer = EventProducer(settings)
        self.accepting = False
        self.started = False
        # The last request the brokers did not acknowledge, and when: /readyz holds the process unready a
        # moment after it (api/probes.py), as after a failed store write.
        self.store_failure: tuple[str, float] | None = None
        # Every 2xx was acknowledged by the brokers before it was sent, so a stop never loses one.
        self.stopped_cleanly = False

    async def start(self) -> None:
        await self.producer.start()
        self.accepting = True
        self.started = True
        log.info("collector started: ack mode kafka, topic %s on %s", self.producer.topic,
                 self.settings.kafka_bootstrap_servers)

    def accept_now(self, envelopes: list[Envelope]) -> str | None:
        """None: Kafka's acknowledgement is always waited for (`accept`)."""
        return None

    async def accept(self, envelopes: list[Envelope]) -> str:
        """"created" once the brokers acknowledged every event; raises KafkaUnavailable (a StoreError: 503
        with Retry-After) when any was not, within KAFKA_PRODUCE_TIMEOUT_SECONDS."""
        if not envelopes:
            return CREATED  # all screened out by the rules (docs/rules.md)
        try:
            error = await self.producer.send(envelopes)
            if error is not None:
                raise KafkaUnavailable(f"Kafka did not acknowledge {len(envelopes)} events: {error}")
        except KafkaUnavailable as exc:
            self.store_failure = (str(exc), time.monotonic())
            raise
        self.store_failure = None
        return CREATED

    async def stop(self) -> None:
        """Stop accepting; let librdkafka deliver what it holds within what is left of the grace."""
        self.accepting = False
        unacknowledged = await self.producer.stop(self.grace_left())
        if unacknowledged:
            # Their requests got no 2xx (they were cut off or answered 503), so nothing acknowledged is lost.
            log.warning("stopped with %d records not acknowledged by Kafka; none of them was answered 2xx",
                        unacknowledged)
        self.stopped_cleanly = True

    def readiness(self) -> tuple[list[str], dict[str, Any]]:
        """The reasons Kafka gives for being unready, and the report's `kafka` part (api/probes.py)."""
        reasons = []
        if self.producer.unreachable is not None:
            reasons.append(f"Kafka brokers unreachable: {self.producer.unreachable}")
        return reasons, {"topic": self.producer.topic,
                         "brokers": "unreachable" if self.producer.unreachable else "reachable"}
