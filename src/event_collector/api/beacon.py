"""`POST /events/beacon`: an event sent by `navigator.sendBeacon`, which cannot set headers (docs/browsers.md).

A beacon carries what /events takes from headers elsewhere: the token as `?token=` or as the body's `token`
field (or, from a `fetch`, the usual Authorization header: exactly one of the three), and the device
fields `device_uuid`, `app_version` and `os_version` in the body, where a request header of the same
meaning wins. The body is one event, as JSON, sent as text/plain (what sendBeacon sends for a string: a
CORS-simple request, no preflight) or application/json; a form body (sendBeacon given URLSearchParams or
FormData) is refused with 415. The route then goes the same way as /events: the same validation, limits,
rate limit and acknowledgement; it answers 204 without a body, which a beacon never reads anyway.

The token and the device fields are not event fields: the event decoder ignores them, so neither ever
reaches the document. A token in a URL is kept out of every log line (logs.QueryRedactingFilter).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

import msgspec

from ..exceptions import AuthError, InvalidEvent, UnsupportedEncoding
from .validation import MAX_STRING_CHARS

# Body fields standing for the headers /events copies: (body field, header name on the wire).
DEVICE_FIELDS = (("device_uuid", b"device-uuid"), ("app_version", b"app-version"), ("os_version", b"os-version"))
_FORM_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")

_Field = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)] | None


class _BeaconFields(msgspec.Struct):
    token: str | None = None
    device_uuid: _Field = None
    app_version: _Field = None
    os_version: _Field = None


_decode_fields = msgspec.json.Decoder(_BeaconFields).decode


def check_content_type(headers: dict[bytes, bytes]) -> None:
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        raise UnsupportedEncoding("a beacon's body is one JSON event: send it as a string (text/plain) "
                                  "or as application/json, not as a form")


def as_event_request(query_string: bytes, headers: dict[bytes, bytes], body: bytes) -> dict[bytes, bytes]:
    """The headers /events would have had: Authorization from the query or the body, device headers from
    the body where the request has none. The body must already have decoded as an event."""
    try:
        fields = _decode_fields(body)
    except msgspec.ValidationError as exc:
        field = str(exc).rpartition("$.")[2].rstrip("`") or None
        # Never quote the value: it may be a token.
        raise InvalidEvent(f"beacon field {field} must be a string of at most {MAX_STRING_CHARS} characters",
                           field) from None
    tokens = [value for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
              if name == "token"]
    if fields.token is not None:
        tokens.append(fields.token)
    given = len(tokens) + (b"authorization" in headers)
    if given > 1:
        raise InvalidEvent("the token is given more than once: use one of ?token=, the body's token field "
                           "or the Authorization header", "token")
    adapted = dict(headers)
    if tokens:
        if not tokens[0]:
            raise AuthError("the token is empty")
        adapted[b"authorization"] = b"Bearer " + tokens[0].encode("latin-1", "replace")
    elif given == 0:
        raise AuthError("missing token: give it as ?token=, as the body's token field or in an Authorization header")
    for name, header in DEVICE_FIELDS:
        value = getattr(fields, name)
        if value is not None and header not in adapted:
            adapted[header] = value.encode()
    return adapted
