"""The ack mode picks the collector: ACK_MODE=kafka's is stateless (kafka/collector.py); memory and durable
keep events in this process's buffer and pending store (lifecycle.py). Neither knows of the other: this
module, above both, is the only place that names them together."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from .lifecycle import Collector
from .settings import Settings

if TYPE_CHECKING:
    from .kafka.collector import KafkaCollector

AnyCollector = Union[Collector, "KafkaCollector"]


def open_collector(settings: Settings, *, runs_janitor: bool = True) -> AnyCollector:
    """`runs_janitor`: whether this process does the store's maintenance (one process per store)."""
    if settings.ack_mode == "kafka":
        # Imported only in this mode: Kafka's client is an optional extra (pip install event-collector[kafka]).
        from .kafka.collector import KafkaCollector

        return KafkaCollector(settings)
    return Collector(settings, runs_janitor=runs_janitor)
