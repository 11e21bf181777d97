"""What the collector answers, as whole answers (status, headers, body), and the counts of its refusals.

One Answer serves both ways out: the ASGI app sends it as two messages (`send_answer`), the protocol's fast
path writes it as bytes (api/wire.py). A refusal is counted where its answer is made, so that both paths
count it alike.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, NamedTuple

import msgspec

from .. import metrics
from ..collecting import CREATED, PENDING
from ..exceptions import AuthError, InvalidEvent, StoreError
from .batch import Rejection

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON: Headers = [(b"content-type", b"application/json")]
RETRY_AFTER_SECONDS = b"5"
_encode = msgspec.json.encode
# 4xx statuses of InvalidEvent and its subclasses, as the `reason` label of requests_refused.
_REFUSAL_REASONS = {413: "too_large", 415: "unsupported_encoding"}


class Answer(NamedTuple):
    """A whole answer. Its headers hold its Content-Length, which spares the server chunked framing; a 204
    has none."""

    status: int
    headers: Headers
    body: bytes


def answer(status: int, payload: Any, extra: Headers | None = None) -> Answer:
    """A JSON answer."""
    body = _encode(payload)
    return Answer(status, [*JSON, *(extra or []), (b"content-length", str(len(body)).encode())], body)


def plain_answer(status: int, body: bytes, headers: Headers) -> Answer:
    return Answer(status, [*headers, (b"content-length", str(len(body)).encode())], body)


# The answers of a kept single event, built once: every request of a kind answers the same (uvicorn reads
# the headers and keeps nothing of them; api/wire.py encodes these once per Date).
STATUS_ANSWERS = {status: answer(200, {"status": status}) for status in (CREATED, PENDING)}
NO_CONTENT = Answer(204, [], b"")


async def send_answer(send: Send, whole: Answer) -> None:
    status, headers, body = whole
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def refusal_answer(exc: AuthError | InvalidEvent) -> Answer:
    """The answer to a request refused for its credentials (401) or its content (4xx), counted."""
    if isinstance(exc, AuthError):
        refused("unauthorized")
        return answer(401, {"error": str(exc)}, [(b"www-authenticate", b"Bearer")])
    refused(_REFUSAL_REASONS.get(exc.status, "invalid"))
    return answer(exc.status, _error(exc.message, exc.field))


def late_body_answer() -> Answer:
    """The 408 of a body not received within BODY_READ_TIMEOUT_SECONDS, counted."""
    refused("timeout")
    return answer(408, {"error": "request body not received in time"})


def rate_limited_answer(retry_after: bytes, limit: str = "RATE_LIMIT_PER_USER") -> Answer:
    metrics.requests_refused.labels("rate_limited").inc()
    return answer(429, {"error": f"rate limit exceeded: {limit} events a second"}, [(b"retry-after", retry_after)])


def unavailable_answer(reason: str) -> Answer:
    return answer(503, {"error": reason}, [(b"retry-after", RETRY_AFTER_SECONDS)])


def store_failed_answer(envelopes: list, exc: StoreError) -> Answer:
    metrics.received_unavailable.inc(max(1, len(envelopes)))
    log.error("could not keep %d events: %s", len(envelopes), exc)
    return unavailable_answer("the collector cannot store the events now")


def count_kept(status: str, envelopes: list, rejected: list[Rejection]) -> None:
    (metrics.received_created if status == CREATED else metrics.received_pending).inc(len(envelopes))
    invalid = sum(1 for rejection in rejected if rejection.status != 429)
    if invalid:
        metrics.received_rejected.inc(invalid)


def refused(reason: str) -> None:
    """Count a request refused whole (`reason` labels requests_refused)."""
    metrics.requests_refused.labels(reason).inc()
    metrics.received_rejected.inc()


def _error(message: str, field: str | None) -> dict[str, str]:
    return {"error": message} if field is None else {"error": message, "field": field}
