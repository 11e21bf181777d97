"""The unit that flows through the pipeline: an encoded document plus where it goes.

A document is encoded once, when it is accepted; the buffer, the pending store and the bulk request
all carry the same bytes.
"""

from __future__ import annotations

import functools
import time
import uuid
from typing import Any

import msgspec

from .enrich import ClientFields
from .enrich.client_time import event_time, written
from .enrich.place import Place
from .enrich.user_agent import UserAgentInfo

# Index names follow the original collector: the month in UTC+9 (KST), not zero-padded.
_KST_OFFSET_SECONDS = 9 * 3600

_encode = msgspec.json.Encoder().encode
_NO_CLIENT = ClientFields()
# PENDING_RETENTION_DAYS' default: an event time older than the store keeps events is implausible.
_DEFAULT_MAX_EVENT_AGE_SECONDS = 7 * 86400.0
# Fields taken out of a tracking message's context are keywords: as long as the JWT API's event strings.
_MAX_COPIED_CHARS = 1024


class Envelope(msgspec.Struct, gc=False):
    index: str
    log_id: str
    document: bytes
    received_at: float
    # Set when the event also has a row in the pending store, which must go once it is delivered.
    pending_id: int | None = None
    attempts: int = 0
    # The token's `sub`: the Kafka record key in ACK_MODE=kafka (one user's events stay in one partition, in
    # order). The pending store does not keep it; its events never go to Kafka.
    user_id: str = ""


class _EventInfo(msgspec.Struct):
    page: str | None
    event: str | None
    label: str | None
    target: str | None
    section: str | None
    param: dict[str, Any] | None


class _Document(msgspec.Struct):
    # Field order is the document's key order.
    log_id: str
    user_id: str | None
    device_uuid: str | None
    app_version: str | None
    os_version: str | None
    user_agent: str | None
    event_info: _EventInfo
    received_at: str
    # Added to the original's shape (README, "The indexed document"); docs/client-time.md, docs/enrichment.md.
    event_time: str
    event_time_clamped: bool
    timestamp: str | None
    sent_at: str | None
    client_ip: str | None
    geo: Place | None
    user_agent_info: UserAgentInfo | None


class _TrackedDocument(_Document):
    """A message of the tracking API (api/tracking.py): the same document, and what Segment's spec adds."""

    type: str
    anonymous_id: str | None
    source: str
    group_id: str | None
    previous_id: str | None
    traits: dict[str, Any] | None
    context: dict[str, Any] | None
    integrations: dict[str, Any] | None
    # True when the message came without a messageId: a resend of it may make a second document.
    message_id_generated: bool


class DocumentOwner(msgspec.Struct):
    """Who sent a document, as the document says: the JWT API's `user_id` (its token's `sub`) and no `source`;
    a tracking message's `source` (api/receipts_route.py answers a receipt only to its sender)."""

    user_id: str | None = None
    source: str | None = None


_decode_owner = msgspec.json.Decoder(DocumentOwner).decode
_NO_OWNER = DocumentOwner()


def document_owner(document: bytes | str | None) -> DocumentOwner:
    """The owner fields of an encoded document; nobody's when it is missing or unreadable (a damaged row)."""
    if not document:
        return _NO_OWNER
    try:
        return _decode_owner(document)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _NO_OWNER


def index_name(environment: str, epoch_seconds: float, prefix: str = "events") -> str:
    """`{prefix}_{environment}_{YYYY}-{M}`: the prefix is `events`, or a source's (sources.py). From a time
    that is the same on every resend of the event (EventTime.index_time), never the flush time, so a retry
    targets the same index."""
    kst = time.gmtime(epoch_seconds + _KST_OFFSET_SECONDS)
    return f"{prefix}_{environment}_{kst.tm_year}-{kst.tm_mon}"


def format_timestamp(epoch_seconds: float) -> str:
    return _second_of(int(epoch_seconds)) + _MILLIS[int(epoch_seconds * 1000) % 1000]


# ".000Z" to ".999Z": a lookup rather than formatting the milliseconds of every event.
_MILLIS = tuple(f".{millis:03d}Z" for millis in range(1000))


@functools.lru_cache(maxsize=4)
def _second_of(epoch_second: int) -> str:
    # Events arrive thousands a second: format each second once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_second))


@functools.lru_cache(maxsize=256)
def _index_of_hour(environment: str, epoch_hour: int, prefix: str = "events") -> str:
    # UTC+9 is a whole number of hours away from UTC, so a month starts on the hour: one name per hour.
    return index_name(environment, epoch_hour * 3600, prefix)


def build_envelope(
    environment: str,
    event: Any,
    user_id: str,
    headers: dict[str, str | None],
    received_at: float,
    client: ClientFields = _NO_CLIENT,
    max_event_age_seconds: float = _DEFAULT_MAX_EVENT_AGE_SECONDS,
) -> Envelope:
    """`event` is a validated `api.validation.EventBody`; `headers` holds the copied request headers and
    `client` what the request says about the client (enrich.Enricher)."""
    received = format_timestamp(received_at)
    if event.timestamp is None:
        # Most events carry no device time: nothing to work out (enrich/client_time.py's first case).
        happened, clamped, index_time = received, False, received_at
    else:
        times = event_time(event.timestamp, event.sent_at, received_at, max_event_age_seconds)
        happened, clamped, index_time = format_timestamp(times.event_time), times.clamped, times.index_time
    document = _Document(
        event.log_id,
        user_id,
        headers.get("device-uuid"),
        headers.get("app-version"),
        headers.get("os-version"),
        headers.get("user-agent"),
        _EventInfo(event.page, event.event, event.label, event.target, event.section, event.param),
        received,
        happened,
        clamped,
        None if event.timestamp is None else written(event.timestamp),
        None if event.sent_at is None else written(event.sent_at),
        client.client_ip,
        client.geo,
        client.user_agent_info,
    )
    return Envelope(
        index=_index_of_hour(environment, int(index_time // 3600)),
        log_id=event.log_id,
        document=_encode(document),
        received_at=received_at,
        user_id=user_id,
    )


def build_tracked_envelope(
    environment: str,
    source: Any,
    message: Any,
    sent_at: Any,
    received_at: float,
    client: ClientFields,
    max_event_age_seconds: float,
    user_agent: str | None,
) -> Envelope:
    """`message` is a checked `api.tracking.Message` of `source` (sources.Source); `sent_at` the batch's when the
    message has none. Its time follows Segment's rule, the event time being `received_at − (sentAt −
    (originalTimestamp or timestamp))`, clamped as the JWT API's is (enrich/client_time.py)."""
    device_time = message.originalTimestamp if message.originalTimestamp is not None else message.timestamp
    sent = message.sentAt if message.sentAt is not None else sent_at
    received = format_timestamp(received_at)
    if device_time is None:
        happened, clamped, index_time = received, False, received_at
    else:
        times = event_time(device_time, sent, received_at, max_event_age_seconds)
        happened, clamped, index_time = format_timestamp(times.event_time), times.clamped, times.index_time
    context = message.context or {}
    page = message.name if message.type in ("page", "screen") else _path(context.get("page"))
    traits = message.traits
    if traits is None and message.type in ("identify", "group"):
        # rudder-sdk-python sends identify's traits in context.traits; checked already, as part of context.
        traits = context.get("traits") if isinstance(context.get("traits"), dict) else None
    log_id, generated = message.messageId, message.messageId is None
    if log_id is None:
        log_id = uuid.uuid4().hex
    document = _TrackedDocument(
        log_id,
        message.userId,
        _text(context.get("device"), "id"),
        _text(context.get("app"), "version"),
        _text(context.get("os"), "version"),
        user_agent,
        _EventInfo(page, message.event, None, None, message.category, message.properties),
        received,
        happened,
        clamped,
        None if device_time is None else written(device_time),
        None if sent is None else written(sent),
        client.client_ip,
        client.geo,
        client.user_agent_info,
        message.type,
        message.anonymousId,
        source.name,
        message.groupId,
        message.previousId,
        traits,
        message.context,
        message.integrations,
        generated,
    )
    return Envelope(
        index=_index_of_hour(environment, int(index_time // 3600), source.prefix),
        log_id=log_id,
        document=_encode(document),
        received_at=received_at,
        user_id=message.userId or message.anonymousId or "",
    )


def _text(part: Any, key: str) -> str | None:
    """context.device.id and the like: a string, or nothing (the spec does not type them; a keyword cannot
    hold an object)."""
    value = part.get(key) if isinstance(part, dict) else None
    return value if isinstance(value, str) and len(value) <= _MAX_COPIED_CHARS else None


def _path(page: Any) -> str | None:
    return _text(page, "path")
