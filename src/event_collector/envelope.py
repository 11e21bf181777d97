"""The unit that flows through the pipeline: an encoded document plus where it goes.

A document is encoded once, when it is accepted; the buffer, the pending store and the bulk request
all carry the same bytes.
"""

from __future__ import annotations

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


def index_name(environment: str, received_at: float) -> str:
    # From the time the event was received, never the flush time, so a retry targets the same index.
    kst = time.gmtime(received_at + _KST_OFFSET_SECONDS)
    return f"events_{environment}_{kst.tm_year}-{kst.tm_mon}"


def format_timestamp(epoch_seconds: float) -> str:
    millis = int(epoch_seconds * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds)) + f".{millis:03d}Z"


def build_envelope(
    environment: str,
    event: Any,
    user_id: str,
    headers: dict[str, str | None],
    received_at: float,
) -> Envelope:
    """`event` is a validated `api.validation.EventBody`; `headers` holds the copied request headers."""
    document = {
        "log_id": event.log_id,
        "user_id": user_id,
        "device_uuid": headers.get("device-uuid"),
        "app_version": headers.get("app-version"),
        "os_version": headers.get("os-version"),
        "user_agent": headers.get("user-agent"),
        "event_info": {
            "page": event.page,
            "event": event.event,
            "label": event.label,
            "target": event.target,
            "section": event.section,
            "param": event.param,
        },
        "received_at": format_timestamp(received_at),
    }
    return Envelope(
        index=index_name(environment, received_at),
        log_id=event.log_id,
        document=_encode(document),
        received_at=received_at,
    )
