"""Decoding and validating one event body; every failure names the problem and, where known, the field."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from ..exceptions import InvalidEvent

MAX_STRING_CHARS = 1024
# OpenSearch refuses a document _id over 512 bytes, and does so for the whole _bulk request.
MAX_LOG_ID_BYTES = 512
MAX_PARAM_DEPTH = 20

_Required = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_CHARS)]
_Optional = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)] | None


class EventBody(msgspec.Struct):
    # Unknown fields are ignored, as the original collector did.
    log_id: _Required
    page: _Required
    event: _Required
    label: _Optional = None
    target: _Optional = None
    section: _Optional = None
    # Free-form; values inside it are not bound by MAX_STRING_CHARS.
    param: dict[str, Any] | None = None


_decode_event = msgspec.json.Decoder(EventBody).decode
_FIELD_AT = re.compile(r"at `\$\.([A-Za-z_]+)")
_MISSING_FIELD = re.compile(r"required field `([^`]+)`")


def decode_event(body: bytes) -> EventBody:
    if not body.strip():
        raise InvalidEvent("request body is empty")
    try:
        event = _decode_event(body)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(str(exc), _field_of(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidEvent("body is not valid UTF-8") from None
    except RecursionError:
        raise InvalidEvent(f"param is nested deeper than {MAX_PARAM_DEPTH} levels", "param") from None
    if len(event.log_id) * 4 > MAX_LOG_ID_BYTES and len(event.log_id.encode()) > MAX_LOG_ID_BYTES:
        raise InvalidEvent(f"log_id is longer than {MAX_LOG_ID_BYTES} bytes in UTF-8", "log_id")
    # Nesting deeper than the limit needs more brackets than the limit: most bodies skip the walk.
    if (event.param is not None and body.count(b"{") + body.count(b"[") > MAX_PARAM_DEPTH
            and _depth(event.param) > MAX_PARAM_DEPTH):
        raise InvalidEvent(f"param is nested deeper than {MAX_PARAM_DEPTH} levels", "param")
    return event


def _field_of(message: str) -> str | None:
    match = _FIELD_AT.search(message) or _MISSING_FIELD.search(message)
    return match.group(1) if match else None


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
