"""Decoding and validating one event body; every failure names the problem and, where known, the field.

An event is refused here, with a 400, whenever OpenSearch would refuse its document for its shape: once
answered 200, a document OpenSearch refuses can only go to the dead-letter table. The limits, measured
against OpenSearch 2.19 with the collector's index template (shipper/template.py):

- a keyword field's value is one Lucene term, at most MAX_TERM_BYTES in UTF-8: the event's string fields
  are bound far below it (MAX_STRING_CHARS, at most 4 bytes each), `log_id` by the document id's limit
  (MAX_LOG_ID_BYTES); the copied headers and the token's `sub` are bound where they are read;
- `param` is a flat_object, which indexes each leaf (a string, number or boolean; null is skipped) as the
  doc value "event_info.param.event_info.param.<key path>=<value>", the key path being the keys from
  `param` down to the leaf joined with "." (array levels add nothing): key path and value together get
  MAX_PARAM_PATH_AND_VALUE_BYTES in UTF-8. Every other term it writes (the value alone, each key) is
  shorter. Keys that lead to no leaf (to null, {} or []) are not indexed and have no limit;
- OpenSearch's JSON parser refuses an integer of more than MAX_PARAM_NUMBER_DIGITS digits;
- flat_object sets no depth limit of its own (index.mapping.depth.limit is for object mappings), but it
  walks `param` recursively: at 990 levels the OpenSearch thread indexing it dies of a stack overflow and
  the request never answers. `param` may nest MAX_PARAM_DEPTH levels, the depth an object mapping allows.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from ..exceptions import InvalidEvent

MAX_STRING_CHARS = 1024
# OpenSearch refuses a document _id over 512 bytes, and does so for the whole _bulk request.
MAX_LOG_ID_BYTES = 512
MAX_PARAM_DEPTH = 20
# Lucene's limit for one term, and for one doc value: longer, and OpenSearch refuses the whole document.
MAX_TERM_BYTES = 32766
# flat_object prefixes the leaf's doc value with its field's full name twice, and joins path and value with "=".
_PARAM_FIELD_PREFIX = "event_info.param."
MAX_PARAM_PATH_AND_VALUE_BYTES = MAX_TERM_BYTES - 2 * len(_PARAM_FIELD_PREFIX) - len("=")
# The longest number OpenSearch's JSON parser reads (Jackson's maxNumberLength); the sign does not count.
MAX_PARAM_NUMBER_DIGITS = 1000

MAX_UTC_OFFSET = timedelta(hours=18)
# The end of year 9999 in epoch milliseconds: the last time an ISO 8601 date string can carry.
MAX_EPOCH_MILLIS = 253402300799999

_Required = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_CHARS)]
_Optional = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)] | None
# A time on the device's clock: RFC 3339 with its offset (a time without one is ambiguous), or epoch
# milliseconds from 1970 on. msgspec parses both and names the field when neither fits.
ClientTime = (Annotated[datetime, msgspec.Meta(tz=True)] | Annotated[float, msgspec.Meta(ge=0, le=MAX_EPOCH_MILLIS)]
               | None)


class EventBody(msgspec.Struct):
    # Unknown fields are ignored, as the original collector did.
    log_id: _Required
    page: _Required
    event: _Required
    label: _Optional = None
    target: _Optional = None
    section: _Optional = None
    # Free-form; values inside it are not bound by MAX_STRING_CHARS but by what flat_object can index.
    param: dict[str, Any] | None = None
    # When the event happened and when the request was sent, by the device's clock (enrich/client_time.py).
    timestamp: ClientTime = None
    sent_at: ClientTime = None


_decode_event = msgspec.json.Decoder(EventBody).decode
_CLIENT_TIMES = ("timestamp", "sent_at")
_encode = msgspec.json.encode
_FIELD_AT = re.compile(r"at `\$\.([A-Za-z_]+)")
_MISSING_FIELD = re.compile(r"required field `([^`]+)`")

# A leaf's key path and value both come from the body: a body shorter than this cannot hold a pair too long
# (a float re-encoded by msgspec may grow, by less than 24 characters: "1E5" becomes "100000.0").
_TERMS_FIT_BELOW_BYTES = MAX_PARAM_PATH_AND_VALUE_BYTES - 24
# An integer too long for OpenSearch is a run of more digits than it takes: looked for with bytes methods
# (the re module takes tens of times longer), and only in a body with that many digits in all (cheaper still).
_DIGITS = b"0123456789"
_DIGITS_AS_ZERO = bytes.maketrans(_DIGITS, b"0" * 10)
_LONG_DIGIT_RUN = b"0" * (MAX_PARAM_NUMBER_DIGITS + 1)
_TOO_MANY_DIGITS = 10**MAX_PARAM_NUMBER_DIGITS
# Keys longer than this are cut in error messages, which must stay small.
_SHOWN_KEY_CHARS = 64


def decode_event(body: bytes) -> EventBody:
    # isspace() stops at the first other byte, where strip() would copy the body.
    if not body or body.isspace():
        raise InvalidEvent("request body is empty")
    try:
        event = _decode_event(body)
    except msgspec.ValidationError as exc:
        field = _field_of(str(exc))
        if field in _CLIENT_TIMES:
            raise InvalidEvent(f"{field} must be an RFC 3339 date-time with an offset (2026-11-28T09:15:02.123Z) or "
                               f"epoch milliseconds from 0 to {MAX_EPOCH_MILLIS}: {exc}", field) from None
        raise InvalidEvent(str(exc), field) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidEvent("body is not valid UTF-8") from None
    except RecursionError:
        raise _too_deep(body) from None
    if len(event.log_id) * 4 > MAX_LOG_ID_BYTES and len(event.log_id.encode()) > MAX_LOG_ID_BYTES:
        raise InvalidEvent(f"log_id is longer than {MAX_LOG_ID_BYTES} bytes in UTF-8", "log_id")
    if event.param is not None:
        check_free_form(event.param, body)
    if event.timestamp is not None or event.sent_at is not None:
        check_offsets(event)
    return event


def check_offsets(event: Any, fields: tuple[str, ...] = _CLIENT_TIMES) -> None:
    """RFC 3339 allows offsets up to ±23:59; OpenSearch (Java's ZoneOffset) reads up to ±18:00, and the
    document keeps the offset the device wrote."""
    for field in fields:
        value = getattr(event, field)
        if type(value) is datetime and abs(value.utcoffset()) > MAX_UTC_OFFSET:
            raise InvalidEvent(f"{field} has a UTC offset beyond ±18:00, which no time zone has and OpenSearch "
                               "refuses", field)


def _field_of(message: str) -> str | None:
    match = _FIELD_AT.search(message) or _MISSING_FIELD.search(message)
    return match.group(1) if match else None


def check_free_form(param: dict[str, Any], body: bytes, name: str = "param") -> None:
    """A free-form object indexed as a flat_object (`param`; the tracking API's `properties`, `traits`,
    `context`): held to `param`'s limits. Most bodies are too small to break a limit: each walk runs only
    when a cheap test of the body says it could find something."""
    # Nesting deeper than the limit needs more brackets than the limit.
    if body.count(b"{") + body.count(b"[") > MAX_PARAM_DEPTH and _depth(param) > MAX_PARAM_DEPTH:
        raise _param_too_deep(name)
    if len(body) >= _TERMS_FIT_BELOW_BYTES or _may_hold_a_long_number(body):
        _check_leaves(param, name)


def _may_hold_a_long_number(body: bytes) -> bool:
    return (len(body) > MAX_PARAM_NUMBER_DIGITS
            and len(body) - len(body.translate(None, _DIGITS)) > MAX_PARAM_NUMBER_DIGITS
            and _LONG_DIGIT_RUN in body.translate(_DIGITS_AS_ZERO))


def _param_too_deep(name: str = "param") -> InvalidEvent:
    return InvalidEvent(f"{name} is nested deeper than {MAX_PARAM_DEPTH} levels", name)


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, counting `param` itself as level 1 (iterative: no recursion limit)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _check_leaves(param: dict[str, Any], name: str) -> None:
    """Refuse a leaf flat_object could not index: its key path and value too long together, or a number
    too long."""
    try:
        _check_node(param, -1)
    except _Unindexable as problem:
        path = _spell(name, reversed(problem.steps))
        if problem.path_and_value_bytes is None:
            raise InvalidEvent(f"{name} value at {path} is a number of more than {MAX_PARAM_NUMBER_DIGITS} "
                               "digits, which OpenSearch refuses", name) from None
        raise InvalidEvent(f"{name} value at {path} cannot be indexed: its key path and value take "
                           f"{problem.path_and_value_bytes} bytes in UTF-8, more than the "
                           f"{MAX_PARAM_PATH_AND_VALUE_BYTES} OpenSearch indexes as one term", name) from None


class _Unindexable(Exception):
    """Raised at the leaf; each level on the way up adds its key or array index, so a path costs nothing
    until there is an error to spell out."""

    def __init__(self, path_and_value_bytes: int | None) -> None:
        self.path_and_value_bytes = path_and_value_bytes
        self.steps: list[str | int] = []


def _check_node(node: Any, path_bytes: int) -> None:
    """`path_bytes`: UTF-8 bytes of the key path down to `node` (-1 for `param` itself, so that each key
    adds its "." too). Recursive: `param` is at most MAX_PARAM_DEPTH deep here, and recursion is the
    fastest walk in Python. Short values are let through on their length in characters (at most 4 bytes
    each) before any encoding."""
    kind = type(node)
    if kind is dict:
        for key, child in node.items():
            try:
                _check_node(child, path_bytes + 1 + (len(key) if key.isascii() else len(key.encode())))
            except _Unindexable as problem:
                problem.steps.append(key)
                raise
    elif kind is list:
        for index, child in enumerate(node):
            try:
                _check_node(child, path_bytes)
            except _Unindexable as problem:
                problem.steps.append(index)
                raise
    elif kind is str:
        if path_bytes + 4 * len(node) > MAX_PARAM_PATH_AND_VALUE_BYTES:
            total = path_bytes + len(node.encode())
            if total > MAX_PARAM_PATH_AND_VALUE_BYTES:
                raise _Unindexable(total)
    elif node is not None:
        if kind is int and not -_TOO_MANY_DIGITS < node < _TOO_MANY_DIGITS:
            raise _Unindexable(None)
        # Numbers and booleans are indexed as msgspec wrote them: at most a sign and MAX_PARAM_NUMBER_DIGITS.
        if path_bytes + 1 + MAX_PARAM_NUMBER_DIGITS > MAX_PARAM_PATH_AND_VALUE_BYTES:
            total = path_bytes + len(_encode(node))
            if total > MAX_PARAM_PATH_AND_VALUE_BYTES:
                raise _Unindexable(total)


def _spell(name: str, steps: Any) -> str:
    """Keys and array indices as a path a reader can follow: param.key.other[2], long keys cut."""
    spelt = [name]
    for step in steps:
        if isinstance(step, int):
            spelt.append(f"[{step}]")
        else:
            spelt.append("." + _shown(step))
    return "".join(spelt)


def _shown(key: str) -> str:
    return key if len(key) <= _SHOWN_KEY_CHARS else f"{key[:_SHOWN_KEY_CHARS]}…({len(key)} characters)"


# What follows runs only when msgspec gave up on a body nested deeper than Python's recursion limit (1,000
# frames, the caller's included): in `param`, or in an unknown field, which is ignored but parsed all the same
# (a known string field fails at its first bracket). Finding which costs a scan in Python, so it is done only
# over the start of the body, and blames the first field nested deeper than half that limit: no event
# nests so deep, and msgspec gives up on nothing shallower.
_SCANNED_BYTES = 16 * 1024
_FAR_TOO_DEEP = 500
_TOKEN = re.compile(rb'(?P<key>"(?:[^"\\]|\\.)*")\s*:|"(?:[^"\\]|\\.)*"|(?P<open>[\[{])|(?P<close>[\]}])')


def _too_deep(body: bytes) -> InvalidEvent:
    field = _first_field_nested_deeper_than(body[:_SCANNED_BYTES], _FAR_TOO_DEEP)
    if field == "param":
        return _param_too_deep()
    if field is None:
        return InvalidEvent("body is nested too deeply to be read")
    return InvalidEvent(f"{_shown(field)} is nested more than {_FAR_TOO_DEEP} levels deep, too deep to be read (an "
                        "unknown field is ignored, but read all the same)", _shown(field))


def _first_field_nested_deeper_than(body: bytes, levels: int) -> str | None:
    """The first top-level field whose value nests deeper than `levels` (or param deeper than its limit)."""
    depth, field = 0, None
    for token in _TOKEN.finditer(body):
        kind = token.lastgroup
        if kind == "open":
            depth += 1
            # The body's own object is level 1, so a field's value starts at level 2.
            if field is not None and depth - 1 > (MAX_PARAM_DEPTH if field == "param" else levels):
                return field
        elif kind == "close":
            depth -= 1
        elif kind == "key" and depth == 1:
            try:
                field = msgspec.json.decode(token.group("key"))
            except (msgspec.DecodeError, UnicodeDecodeError):
                return None
    return None
