"""The unit that flows through the pipeline: an encoded document plus where it goes.

A document is encoded once, when it is accepted; the buffer, the pending store and the bulk request
all carry the same bytes.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import msgspec

# Index names follow the original collector: the month in UTC+9 (KST), not zero-padded.
_KST_OFFSET_SECONDS = 9 * 3600

_encode = msgspec.json.Encoder().encode


class Envelope(msgspec.Struct, gc=False):
    index: str
    log_id: str
    document: bytes
    received_at: float
    # Set when the event also has a row in the pending store, which must go once it is delivered.
    pending_id: int | None = None
    attempts: int = 0


class _EventInfo(msgspec.Struct):
    page: str
    event: str
    label: str | None
    target: str | None
    section: str | None
    param: dict[str, Any] | None


class _Document(msgspec.Struct):
    # Field order is the document's key order.
    log_id: str
    user_id: str
    device_uuid: str | None
    app_version: str | None
    os_version: str | None
    user_agent: str | None
    event_info: _EventInfo
    received_at: str


def index_name(environment: str, received_at: float) -> str:
    # From the time the event was received, never the flush time, so a retry targets the same index.
    kst = time.gmtime(received_at + _KST_OFFSET_SECONDS)
    return f"events_{environment}_{kst.tm_year}-{kst.tm_mon}"


def format_timestamp(epoch_seconds: float) -> str:
    millis = int(epoch_seconds * 1000) % 1000
    return _second_of(int(epoch_seconds)) + f".{millis:03d}Z"


@functools.lru_cache(maxsize=4)
def _second_of(epoch_second: int) -> str:
    # Events arrive thousands a second: format each second once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


@functools.lru_cache(maxsize=8)
def _index_of_second(environment: str, epoch_second: int) -> str:
    return index_name(environment, epoch_second)


def build_envelope(
    environment: str,
    event: Any,
    user_id: str,
    headers: dict[str, str | None],
    received_at: float,
) -> Envelope:
    """`event` is a validated `api.validation.EventBody`; `headers` holds the copied request headers."""
    document = _Document(
        event.log_id,
        user_id,
        headers.get("device-uuid"),
        headers.get("app-version"),
        headers.get("os-version"),
        headers.get("user-agent"),
        _EventInfo(event.page, event.event, event.label, event.target, event.section, event.param),
        format_timestamp(received_at),
    )
    return Envelope(
        index=_index_of_second(environment, int(received_at)),
        log_id=event.log_id,
        document=_encode(document),
        received_at=received_at,
    )
