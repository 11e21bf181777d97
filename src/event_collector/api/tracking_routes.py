"""The Segment tracking API's routes (README, "The tracking API"), as Routes of the one ingest pipeline.

`/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias` take one message, `/v1/batch`
several; `/v1/t`, `/v1/i`, `/v1/p`, `/v1/s`, `/v1/g`, `/v1/a` and `/v1/b` are the forms analytics-next sends.
The credential is a source's write key (sources.py): HTTP Basic's user name with an empty password, or
`writeKey` in the body. The 2xx is `{"success": true}` once every message is kept (durable mode: in the
journal), so an SDK that retries until it gets one delivers each `messageId` exactly once. Refusals carry a
`code` besides the `error`: rudder-sdk-python retries any 4xx whose body has none.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from ..envelope import build_tracked_envelope
from ..exceptions import AuthError, InvalidEvent
from ..sources import Source, Sources
from .answers import Answer, answer, refused
from .pipeline import IngestPipeline, IngestRequest, Route
from .tracking import SHORT_TYPES, TYPES, Tracked, decode_many, decode_one

_SUCCESS = answer(200, {"success": True})
_REFUSAL_CODES = {401: "unauthorized", 403: "origin_not_allowed", 413: "too_large", 415: "unsupported_encoding"}


class OriginNotAllowed(InvalidEvent):
    status = 403


class WriteKey:
    """A source's write key: Basic's user name, else the body's `writeKey`. Read once the body decoded, and
    looked up in the sources in force now (a key removed from SOURCES_FILE is refused from its reload on)."""

    in_body = True

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def user_id(self, request: IngestRequest, body: bytes) -> str:
        key = basic_user(request.headers.get(b"authorization"))
        if key is None and isinstance(request.batch, Tracked):
            key = request.batch.write_key
        request.source = self.source_of(key, request.headers.get(b"origin"))
        return request.source.name

    def source_of(self, key: str | None, origin: bytes | None) -> Source:
        """The source of a write key, sent from `origin` (a browser's Origin header, if any); or AuthError, or
        OriginNotAllowed (403)."""
        source = self.sources.book.by_key(key) if key else None
        if source is None:
            raise AuthError("unknown or missing write key: send a source's key as HTTP Basic's user name (empty "
                            "password) or as writeKey in the body")
        if origin is not None and not _allows(source.allowed_origins, origin):
            # A browser page of an origin the source does not name: its events are not the source's.
            raise OriginNotAllowed(f"origin {origin.decode('latin-1')!r} is not in source {source.name!r}'s "
                                   "allowed_origins")
        return source


def basic_user(authorization: bytes | None) -> str | None:
    """The user name of `Authorization: Basic base64(user:password)`, or None."""
    if authorization is None or authorization[:6].lower() != b"basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def _allows(origins: list[str], origin: bytes) -> bool:
    text = origin.decode("latin-1").lower()
    return "*" in origins or any(text == allowed.lower() for allowed in origins)


def one_message(implied_type: str):
    def decode(request: IngestRequest, body: bytes) -> list:
        request.batch = decode_one(body, implied_type)
        return request.batch.events

    return decode


def many_messages(request: IngestRequest, body: bytes) -> list:
    request.batch = decode_many(body)
    return request.batch.events


def build(pipeline: IngestPipeline, request: IngestRequest, received_at: float) -> list:
    """Each message's document, enriched from its own context: `context.ip` and `context.userAgent` when the
    message names them (a server SDK sends for many clients), else the request's."""
    tracked = request.batch
    assert isinstance(tracked, Tracked)
    header_agent = request.copied["user-agent"]
    # A batch's messages mostly share their client: each distinct one is worked out once per request.
    clients: dict[tuple[Any, Any], Any] = {}
    envelopes = []
    for message in request.events:
        context = message.context or {}
        agent = context.get("userAgent")
        agent = agent if isinstance(agent, str) else header_agent
        ip = context.get("ip")
        ip = ip if isinstance(ip, str) and ip else None
        client = clients.get((ip, agent))
        if client is None:
            scope = request.scope if ip is None else {"client": (ip, 0), "headers": []}
            client = clients[ip, agent] = pipeline.enricher.client(scope, agent)
        envelopes.append(build_tracked_envelope(pipeline.environment, request.source, message, tracked.sent_at,
                                                received_at, client, pipeline.max_event_age_seconds, agent))
    return envelopes


def success(request: IngestRequest, status: str) -> Answer:
    """`{"success": true}`; with messages refused, which and why (the SDKs read no body of a 2xx)."""
    if not request.rejected:
        return _SUCCESS
    return answer(200, {"success": True, "accepted": len(request.envelopes) + request.discarded, "rejected": [
        {"index": r.index, "status": r.status, "error": r.reason, **({"field": r.field} if r.field else {})}
        for r in request.rejected]})


def refusal(exc: AuthError | InvalidEvent) -> Answer:
    status = 401 if isinstance(exc, AuthError) else exc.status
    code = _REFUSAL_CODES.get(status, "invalid")
    refused(code)  # 400 maps to "invalid" already
    body: dict[str, Any] = {"success": False, "code": code, "error": str(exc) if status == 401 else exc.message}
    if isinstance(exc, InvalidEvent) and exc.field is not None:
        body["field"] = exc.field
    extra = [(b"www-authenticate", b'Basic realm="tracking API"')] if status == 401 else None
    return answer(status, body, extra)


def tracking_routes(sources: Sources) -> dict[bytes, Route]:
    credentials = WriteKey(sources)
    routes = {f"/v1/{kind}".encode(): Route(credentials, one_message(kind), success, build=build, refuse=refusal)
              for kind in TYPES}
    routes |= {f"/v1/{short}".encode(): Route(credentials, one_message(kind), success, build=build, refuse=refusal)
               for short, kind in SHORT_TYPES.items()}
    many = Route(credentials, many_messages, success, build=build, refuse=refusal)
    routes[b"/v1/batch"] = routes[b"/v1/b"] = many
    return routes
