"""Decoding the Segment tracking API's messages (`/v1/track`, …, `/v1/batch`): each checked on its own, against
Segment's rules and against what OpenSearch can index.

A message is refused when Segment's API would refuse it (no `type` it knows, no `userId` nor `anonymousId`,
a track without `event`, a group without `groupId`, an alias without `previousId`), when it is over 32 KB,
or when OpenSearch would refuse its document: strings beyond a keyword's reach, `properties`, `traits` or
`context` nested or sized beyond what a flat_object indexes (api/validation.py), a `messageId` over 512
bytes. Fields the spec does not name are ignored, as Segment ignores them.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from ..exceptions import BodyTooLarge, InvalidEvent
from .batch import DecodedBatch
from .validation import MAX_LOG_ID_BYTES, MAX_STRING_CHARS, ClientTime, check_free_form, check_offsets

# Segment's limits: a message, and a whole batch request.
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
TYPES = ("track", "identify", "page", "screen", "group", "alias")
# What analytics-next sends one message to: /v1/t, /v1/i, … (and /v1/b for its batches).
SHORT_TYPES = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias"}

_Text = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)] | None
_FREE_FORM = ("properties", "traits", "context", "integrations")


class Message(msgspec.Struct, kw_only=True):
    type: _Text = None
    messageId: Annotated[str, msgspec.Meta(max_length=MAX_LOG_ID_BYTES)] | None = None
    # Segment's SDKs send ids as strings; some apps send numbers, which Segment takes as their decimal text.
    userId: _Text | int = None
    anonymousId: _Text | int = None
    event: _Text = None
    name: _Text = None
    category: _Text = None
    groupId: _Text | int = None
    previousId: _Text | int = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    timestamp: ClientTime = None
    originalTimestamp: ClientTime = None
    sentAt: ClientTime = None
    writeKey: _Text = None


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]
    sentAt: ClientTime = None
    writeKey: _Text = None
    # analytics-next's batches may put context on the wrapper; it is merged under each message's own.
    context: dict[str, Any] | None = None


_decode_message = msgspec.json.Decoder(Message).decode
_decode_batch = msgspec.json.Decoder(_Batch).decode


class Tracked(DecodedBatch):
    """The messages of a request, each with its type settled, and the wrapper's fields they fall back to."""

    sent_at: Any = None
    write_key: str | None = None
    # A single-message route's: a message refused by the rules refuses the request (api/rules_gate.py).
    single: bool = False


def decode_one(body: bytes, implied_type: str) -> Tracked:
    """A single-message route's body (`/v1/track`, `/v1/t`, …): the message, or InvalidEvent (400)."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise BodyTooLarge(f"message exceeds {MAX_MESSAGE_BYTES} bytes (the tracking API's limit)")
    message = _message(body, implied_type)
    tracked = Tracked(events=[message], positions=[0])
    tracked.write_key, tracked.single = message.writeKey, True
    return tracked


def decode_many(body: bytes) -> Tracked:
    """`/v1/batch` (and `/v1/b`): `{"batch": [...], "sentAt"?, "writeKey"?}`; each message checked on its own,
    the invalid ones rejected by position, the others kept."""
    if len(body) > MAX_BATCH_BYTES:
        raise BodyTooLarge(f"batch exceeds {MAX_BATCH_BYTES} bytes (the tracking API's limit)")
    if not body or body.isspace():
        raise InvalidEvent("request body is empty")
    try:
        wrapper = _decode_batch(body)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"a batch is {{\"batch\": [messages…]}}: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidEvent(f"body is not valid JSON: {exc}") from None
    tracked = Tracked()
    tracked.sent_at, tracked.write_key = wrapper.sentAt, wrapper.writeKey
    for position, raw in enumerate(wrapper.batch):
        try:
            if len(raw) > MAX_MESSAGE_BYTES:
                raise InvalidEvent(f"message exceeds {MAX_MESSAGE_BYTES} bytes (the tracking API's limit)")
            message = _message(bytes(raw), None)
        except InvalidEvent as exc:
            tracked.rejected.append(tracked.rejection(position, exc.message, exc.field))
            continue
        if wrapper.context and message.context is None:
            message.context = wrapper.context
        tracked.events.append(message)
        tracked.positions.append(position)
        if tracked.write_key is None:
            tracked.write_key = message.writeKey
    return tracked


def _message(body: bytes, implied_type: str | None) -> Message:
    try:
        message = _decode_message(body)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(str(exc), _field_of(str(exc))) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidEvent(f"message is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("message is nested too deeply to be read") from None
    if implied_type is not None:
        message.type = implied_type
    _check(message, body)
    return message


def _check(message: Message, body: bytes) -> None:
    if message.type not in TYPES:
        raise InvalidEvent(f"type {message.type!r} is not one of {', '.join(TYPES)}", "type")
    for name in ("userId", "anonymousId", "groupId", "previousId"):
        value = getattr(message, name)
        if type(value) is int:
            setattr(message, name, str(value))
        elif value == "":
            setattr(message, name, None)  # Rudder's SDKs send "" for an unknown user
    if message.userId is None and message.anonymousId is None:
        raise InvalidEvent("a message needs a userId or an anonymousId", "userId")
    if message.type == "track" and not message.event:
        raise InvalidEvent("a track message needs an event name", "event")
    if message.type == "group" and message.groupId is None:
        raise InvalidEvent("a group message needs a groupId", "groupId")
    if message.type == "alias" and message.previousId is None:
        raise InvalidEvent("an alias message needs a previousId", "previousId")
    if message.messageId is not None and len(message.messageId.encode()) > MAX_LOG_ID_BYTES:
        raise InvalidEvent(f"messageId is longer than {MAX_LOG_ID_BYTES} bytes in UTF-8", "messageId")
    for name in _FREE_FORM:
        value = getattr(message, name)
        if value is not None:
            check_free_form(value, body, name)
    check_offsets(message, ("timestamp", "originalTimestamp", "sentAt"))


def _field_of(message: str) -> str | None:
    at = message.rpartition("at `$.")[2]
    return at.split("`")[0].split(".")[0].split("[")[0] or None if "at `$." in message else None
