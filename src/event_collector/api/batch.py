"""Decoding a batch body: a JSON array or NDJSON, optionally gzip; each event validated on its own."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import msgspec

from ..exceptions import BodyTooLarge, InvalidEvent
from .validation import MAX_PARAM_DEPTH, EventBody, decode_event

_decode_array = msgspec.json.Decoder(list[msgspec.Raw]).decode


@dataclass(frozen=True)
class Rejection:
    """One refused event of a batch. `index` is its zero-based position in the body: the array element,
    or the NDJSON line with blank lines counted, so that `line` (one-based, NDJSON only) is index + 1."""

    index: int
    reason: str
    field: str | None = None
    line: int | None = None
    status: int = 400


@dataclass
class DecodedBatch:
    events: list[EventBody] = field(default_factory=list)
    # The position in the body of each event, in the order of `events`.
    positions: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    ndjson: bool = False

    def rejection(self, position: int, reason: str, field: str | None, status: int = 400) -> Rejection:
        return Rejection(position, reason, field, position + 1 if self.ndjson else None, status)


def inflate(body: bytes, limit: int) -> bytes:
    """Gunzip without ever holding more than `limit` bytes of output: a gzip bomb stops at the limit."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        output = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidEvent(f"body is not valid gzip: {exc}") from None
    if len(output) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge(f"body exceeds MAX_BODY_BYTES ({limit} bytes) once decompressed")
    if not inflater.eof:
        raise InvalidEvent("body is not valid gzip: truncated")
    if inflater.unused_data:
        raise InvalidEvent("body is not valid gzip: data after the end of the stream (send one gzip member)")
    return output


def decode_batch(body: bytes, ndjson: bool, max_events: int) -> DecodedBatch:
    items = _ndjson_items(body) if ndjson else _array_items(body)
    if len(items) > max_events:
        raise BodyTooLarge(f"batch has {len(items)} events, more than BATCH_MAX_EVENTS ({max_events})")
    batch = DecodedBatch(ndjson=ndjson)
    for position, item in items:
        try:
            batch.events.append(decode_event(item))
            batch.positions.append(position)
        except InvalidEvent as exc:
            batch.rejected.append(batch.rejection(position, exc.message, exc.field))
    return batch


def _array_items(body: bytes) -> list[tuple[int, bytes]]:
    if not body.strip():
        raise InvalidEvent("request body is empty")
    try:
        return list(enumerate(bytes(raw) for raw in _decode_array(body)))
    except msgspec.ValidationError:
        raise InvalidEvent("a batch must be a JSON array of events, or NDJSON with Content-Type "
                           "application/x-ndjson") from None
    except RecursionError:
        raise _too_deep() from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        if "recursion depth" in str(exc):
            raise _too_deep() from None
        raise InvalidEvent(f"body is not a valid JSON array: {exc}") from None


def _too_deep() -> InvalidEvent:
    # msgspec reads the whole array before any element and gives up past ~1,000 levels, so the elements
    # cannot be told apart. Such an element could never be valid (param nests at most MAX_PARAM_DEPTH levels);
    # the whole batch is refused and nothing is kept, so the client can resend the others (NDJSON is per line).
    return InvalidEvent(f"an element of the batch is nested more than ~1,000 levels deep, too deep to be read "
                        f"(events nest at most {MAX_PARAM_DEPTH} levels); the batch is refused whole, nothing was kept")


def _ndjson_items(body: bytes) -> list[tuple[int, bytes]]:
    # Blank lines carry no event but keep their number, so positions are the body's own line numbers.
    items = [(number, line) for number, line in enumerate(body.split(b"\n")) if line.strip()]
    if not items:
        raise InvalidEvent("request body is empty")
    return items
