"""The ingest routes, each a Route of the pipeline (api/pipeline.py): its credentials, its decoder, its 2xx.

A new way in, such as the Segment-style tracking API with a source's write key (`/v1/track`, `/v1/batch`),
is a new entry here: a credentials step, a decoder and an answer shape. The steps around them, their order,
the limits and the refusals stay the pipeline's.
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from . import beacon
from .answers import NO_CONTENT, STATUS_ANSWERS, Answer, answer
from .auth import TokenVerifier
from .batch import Rejection, decode_batch
from .pipeline import IngestRequest, Route
from .validation import EventBody, decode_event

# The route the protocol's fast path answers (api/fast_dispatch.py).
EVENTS_PATH = b"/events"


class BearerToken:
    """`Authorization: Bearer <JWT>` (api/auth.py), read with the head: a request without a valid token is
    refused before its body is read."""

    in_body = False

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def user_id(self, request: IngestRequest, body: bytes) -> str:
        return self.verifier.user_id(request.headers.get(b"authorization"))


class BeaconToken(BearerToken):
    """A beacon's token: `?token=`, the body's `token` field or the Authorization header (api/beacon.py),
    read once the body decoded as an event; the body's device fields stand for the device headers."""

    in_body = True

    def user_id(self, request: IngestRequest, body: bytes) -> str:
        request.headers = beacon.as_event_request(request.scope.get("query_string", b""), request.headers, body)
        return super().user_id(request, body)


def one_event(request: IngestRequest, body: bytes) -> list[EventBody]:
    return [decode_event(body)]


class EventBatch:
    """A JSON array, or NDJSON (Content-Type application/x-ndjson), of at most BATCH_MAX_EVENTS events,
    each checked on its own: the invalid ones are rejected by position, the others kept (api/batch.py)."""

    def __init__(self, max_events: int) -> None:
        self.max_events = max_events

    def __call__(self, request: IngestRequest, body: bytes) -> list[EventBody]:
        content_type = request.headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        request.batch = decode_batch(body, content_type == b"application/x-ndjson", self.max_events)
        return request.batch.events


def status_answer(request: IngestRequest, status: str) -> Answer:
    """`{"status": "created"}` (buffered) or `{"status": "pending"}` (kept for later delivery)."""
    return STATUS_ANSWERS[status]


def batch_answer(request: IngestRequest, status: str) -> Answer:
    """How many events were kept, and each rejected one by position with its reason."""
    extra = [(b"retry-after", request.retry_after)] if request.retry_after is not None else []
    return answer(200, {"status": status, "accepted": len(request.envelopes) + request.discarded,
                        "rejected": [_rejection(rejection) for rejection in request.rejected]}, extra)


def beacon_answer(request: IngestRequest, status: str) -> Answer:
    """A beacon's answer is never read: 204, no body."""
    return NO_CONTENT


def ingest_routes(settings: Settings, verifier: TokenVerifier) -> dict[bytes, Route]:
    """The routes by raw path: the path as sent, so "/events%2Fbatch" is not "/events/batch"."""
    bearer = BearerToken(verifier)
    return {
        EVENTS_PATH: Route(bearer, one_event, status_answer),
        b"/events/batch": Route(bearer, EventBatch(settings.batch_max_events), batch_answer),
        b"/events/beacon": Route(BeaconToken(verifier), one_event, beacon_answer,
                                 check_head=beacon.check_content_type),
    }


def _rejection(rejection: Rejection) -> dict[str, Any]:
    fields: dict[str, Any] = {"index": rejection.index, "status": rejection.status, "error": rejection.reason}
    if rejection.field is not None:
        fields["field"] = rejection.field
    if rejection.line is not None:
        fields["line"] = rejection.line
    return fields
