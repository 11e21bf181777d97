"""One Kafka record per accepted event, and back: the producer (ACK_MODE=kafka) writes what the indexers read.

- key: the user id (UTF-8), so that one user's events go to one partition and keep their order;
- value: the event's OpenSearch document, the bytes encoded once at acceptance (as the pending store keeps them);
- headers: `index` (the target index), `log_id` (the document `_id`, which makes redelivery idempotent) and
  `received_at` (seconds since the epoch, as text).

A record that lacks these, or whose value is not a JSON object, cannot be indexed: `from_record` raises
BadRecord and the indexer dead-letters it. A value is one line of the bulk body: a JSON object spread over
several lines (pretty-printed by another producer, a letter edited and produced again) is re-encoded on one
line, since a raw newline would end the line early and OpenSearch would refuse the whole request.
"""

from __future__ import annotations

from typing import Iterable

import msgspec

from ..envelope import Envelope

Headers = list[tuple[str, bytes]]


class BadRecord(ValueError):
    """A record on the topic that is not an event written by `to_record`."""


def to_record(envelope: Envelope) -> tuple[bytes, bytes, Headers]:
    headers = [("index", envelope.index.encode()), ("log_id", envelope.log_id.encode()),
               ("received_at", repr(envelope.received_at).encode())]
    return envelope.user_id.encode(), envelope.document, headers


def from_record(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None) -> Envelope:
    fields = {name: raw for name, raw in headers or () if raw is not None}
    try:
        index, log_id = fields["index"].decode(), fields["log_id"].decode()
        received_at = float(fields.get("received_at", b"0"))
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        raise BadRecord(f"not an event record (headers index, log_id, received_at): {exc!r}") from None
    if not value or not index or not log_id:
        raise BadRecord("not an event record: empty document, index or log_id")
    return Envelope(index=index, log_id=log_id, document=_one_line(value), received_at=received_at,
                    user_id=(key or b"").decode(errors="replace"))


def _one_line(value: bytes) -> bytes:
    """The document as one line of the bulk body. Every value is decoded (about a microsecond for an event), so
    that one that is not a JSON object is dead-lettered with its reason rather than sent; only a value that
    holds a raw newline is re-encoded, the collector's own records (one line already) are kept byte for byte."""
    try:
        document = msgspec.json.decode(value)
    except (ValueError, RecursionError) as exc:  # msgspec.DecodeError and invalid UTF-8 are ValueErrors
        raise BadRecord(f"not an event record: the value is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise BadRecord(f"not an event record: the value is JSON but not an object ({type(document).__name__})")
    return msgspec.json.encode(document) if b"\n" in value else value
