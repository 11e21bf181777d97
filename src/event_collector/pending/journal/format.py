"""The segment file format: records of `length (u32 LE) | crc32 (u32 LE) | payload`, the payload msgpack:

    [0, seq, log_id, index, document, received_at]    an accepted event
    [1, [seq, ...]]                                    events settled

A reader stops at a segment's first record that is short or fails its checksum: a write cut by a crash,
never answered. Nothing here knows which process wrote a segment or where it lies.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass

import msgspec

from ...envelope import Envelope

log = logging.getLogger(__name__)

SUFFIX = ".seg"
_HEADER = struct.Struct("<II")
_EVENT, _SETTLED = 0, 1
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


@dataclass
class JournalEvent:
    seq: int
    log_id: str
    index: str
    document: bytes
    received_at: float

    def envelope(self) -> Envelope:
        return Envelope(self.index, self.log_id, self.document, self.received_at)


def event_record(seq: int, event: Envelope | JournalEvent) -> bytes:
    return record((_EVENT, seq, event.log_id, event.index, event.document, event.received_at))


def settled_record(seqs: list[int]) -> bytes:
    return record((_SETTLED, seqs))


def record(payload: object) -> bytes:
    data = _encode(payload)
    return _HEADER.pack(len(data), zlib.crc32(data)) + data


def segment_name(number: int) -> str:
    """Names sort in the order the segments were made."""
    return f"{number:016x}{SUFFIX}"


def read_segment(source: int | str) -> tuple[list[JournalEvent], set[int]]:
    """A segment's events and the sequence numbers it says are settled, up to its first bad record. The
    source is an open descriptor (a file that may have lost its name) or a path."""
    if isinstance(source, int):
        data = os.pread(source, os.fstat(source).st_size, 0)
    else:
        with open(source, "rb") as file:
            data = file.read()
    events: list[JournalEvent] = []
    settled: set[int] = set()
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, checksum = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size:offset + _HEADER.size + length]
        if len(payload) < length or zlib.crc32(payload) != checksum:
            break  # a write cut short: nothing after it was ever answered
        try:
            item = _decode(payload)
            if item[0] == _EVENT:
                _, seq, log_id, index, document, received_at = item
                events.append(JournalEvent(seq, log_id, index, document, received_at))
            elif item[0] == _SETTLED:
                settled.update(item[1])
        except (msgspec.DecodeError, ValueError, TypeError, IndexError) as exc:
            log.error("in-flight journal %s: a record at byte %d cannot be read: %s", source, offset, exc)
            break
        offset += _HEADER.size + length
    return events, settled
