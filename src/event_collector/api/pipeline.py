"""The one way events come in, whatever the route and whichever path carries the request:
credentials → limits → decode → envelope → keep → answer.

The ASGI app (api/app.py) runs it for every ingest route; the protocol's fast path (api/fastpath.py) runs it
for a small single-event `POST /events`, below ASGI. What differs from route to route is its Route
(api/routes.py): where its credentials are, how its body becomes events, what its 2xx says. The steps are
synchronous: what waits is left to the callers, reading the body (the app awaits it within its deadline,
the fast path has it whole) and keeping the events (the app awaits `Collector.accept`, the fast path steps
it by hand). A caller runs:

    request = pipeline.admit(route, scope)      # the head alone; an Answer when it refuses the request
    ... reads the body ...
    refusal = pipeline.prepare(request, body)   # None: request.envelopes are ready to keep
    ... status = Collector.accept(request.envelopes) ...
    route.answer(request, status)               # or, when it raised StoreError, store_failed_answer

Each step fills in its part of the IngestRequest; a refusal is an Answer, counted (api/answers.py). The
kept events are counted by the caller: the app with each answer (answers.count_kept), the fast path in bulk
(fastpath.Tally).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .. import metrics
from ..enrich import Enricher
from ..enrich.client_time import collector_clock
from ..envelope import build_envelope
from ..exceptions import AuthError, InvalidEvent
from ..settings import Settings
from .answers import Answer, rate_limited_answer, refusal_answer
from .batch import DecodedBatch, Rejection
from .body import decoded, too_large
from .ratelimit import UserRateLimiter
from .validation import MAX_STRING_CHARS, EventBody

# Request headers copied into the document: (name on the wire, name in the document's header map).
COPIED_HEADERS = tuple((name.encode(), name) for name in ("device-uuid", "app-version", "os-version", "user-agent"))


class Credentials(Protocol):
    """Who sends a route's events."""

    # False: read from the head, so that a request without them is refused before its body is read.
    # True: read once the body decoded (a beacon's token may be in it).
    in_body: bool

    def user_id(self, request: IngestRequest, body: bytes) -> str:
        """The sender's id, or AuthError. It may put into request.headers what the credentials carry
        besides (a beacon's device fields)."""
        ...


@dataclass(frozen=True, slots=True)
class Route:
    """One way in for events: what differs between routes. The steps and their order are the pipeline's."""

    credentials: Credentials
    # The body, its Content-Encoding undone, as events; or InvalidEvent. A decoder that may find several
    # events records them as request.batch too, with their positions and the rejected ones.
    decode: Callable[[IngestRequest, bytes], list[EventBody]]
    # The 2xx once the events are kept, given what `Collector.accept` answered (CREATED or PENDING).
    answer: Callable[[IngestRequest, str], Answer]
    # Refuses by the head alone what the route cannot take, before its body is read (a beacon's form body).
    check_head: Callable[[dict[bytes, bytes]], None] | None = None
    # The documents of the decoded events, when they are not the JWT API's (the tracking API's messages).
    build: Callable[[IngestPipeline, IngestRequest, float], list] | None = None
    # The answer to a request refused for its credentials or its content.
    refuse: Callable[[AuthError | InvalidEvent], Answer] = refusal_answer


class IngestRequest:
    """One ingest request, filled in by the steps: `user_id` and `copied` by the credentials', `events` by
    the decoder, `envelopes` by the last step of `prepare`."""

    __slots__ = ("route", "scope", "headers", "user_id", "copied", "events", "batch", "retry_after", "envelopes",
                 "source", "discarded", "rules_book", "verdicts")

    user_id: str
    copied: dict[str, str | None]
    events: list[EventBody]
    envelopes: list

    def __init__(self, route: Route, scope: dict[str, Any], head: dict[bytes, bytes] | None = None) -> None:
        self.route = route
        # "headers" and "client" (the peer) for enrichment; "query_string" for a beacon's token.
        self.scope = scope
        # By name, the last of a repeated name winning: `head` when the caller made it already.
        self.headers: dict[bytes, bytes] = dict(scope["headers"]) if head is None else head
        self.batch: DecodedBatch | None = None
        # When a batch was kept in part for the sender's rate limit: when to send the rest again.
        self.retry_after: bytes | None = None
        # The tracking API's sender (sources.Source), named by its write key.
        self.source: Any = None
        # Events the rules dropped, sampled out or dropped as bots: answered as accepted, never kept.
        self.discarded = 0

    @property
    def rejected(self) -> list[Rejection]:
        return self.batch.rejected if self.batch is not None else []


class IngestPipeline:
    def __init__(self, settings: Settings) -> None:
        self.max_body_bytes = settings.max_body_bytes
        self.rate_limiter = (UserRateLimiter(settings.rate_limit_per_user, settings.rate_limit_burst)
                             if settings.rate_limit_per_user > 0 else None)
        self.enricher = Enricher(settings)
        self.clock = collector_clock(settings.test_clock_offset_seconds)
        self.environment = settings.server_environment
        self.max_event_age_seconds = settings.pending_retention_days * 86400
        self._source_limiters: dict[str, UserRateLimiter] = {}
        # RULES_FILE's gate (api/rules_gate.py), set by the app when the setting names a file.
        self.rules_gate: Any = None

    def admit(self, route: Route, scope: dict[str, Any],
              head: dict[bytes, bytes] | None = None) -> IngestRequest | Answer:
        """The steps of the head alone: the route's check of it, and the credentials when they are in it.
        `head`: scope's headers by name, when the caller has them so."""
        request = IngestRequest(route, scope, head)
        try:
            if route.check_head is not None:
                route.check_head(request.headers)
            if not route.credentials.in_body:
                request.user_id = route.credentials.user_id(request, b"")
                request.copied = copied_headers(request.headers)
        except (AuthError, InvalidEvent) as exc:
            return route.refuse(exc)
        return request

    def prepare(self, request: IngestRequest, body: bytes) -> Answer | None:
        """The steps of the body: its size and encoding, its events, the credentials when they are in it, the
        sender's rate limit, the events' documents. None: request.envelopes are ready to keep."""
        route = request.route
        try:
            if len(body) > self.max_body_bytes:
                raise too_large(self.max_body_bytes)
            encoding = request.headers.get(b"content-encoding")
            if encoding is not None:
                body = decoded(body, encoding, self.max_body_bytes)
            request.events = route.decode(request, body)
            if route.credentials.in_body:
                request.user_id = route.credentials.user_id(request, body)
                request.copied = copied_headers(request.headers)
        except (AuthError, InvalidEvent) as exc:
            return route.refuse(exc)
        limiter = self.rate_limiter if request.source is None else self._source_limiter(request.source)
        if limiter is not None and request.events:
            refusal = self._limit_rate(request, limiter)
            if refusal is not None:
                return refusal
        if self.rules_gate is not None:
            # RULES_FILE (docs/rules.md): the events judged, then built here, then stamped.
            return self.rules_gate.prepare(request, self.build)
        self.build(request)
        return None

    def build(self, request: IngestRequest) -> None:
        """The events' documents, received now from this client, into request.envelopes."""
        route = request.route
        if route.build is not None:
            request.envelopes = route.build(self, request, self.clock())
            return
        # A loop, not a comprehension: on Python 3.11 a comprehension is a function made and called each time,
        # which costs a fifth of the usual request's one envelope.
        received_at = self.clock()
        copied = request.copied
        client = self.enricher.client(request.scope, copied["user-agent"])
        request.envelopes = envelopes = []
        for event in request.events:
            envelopes.append(build_envelope(self.environment, event, request.user_id, copied, received_at, client,
                                            self.max_event_age_seconds))

    def _source_limiter(self, source: Any) -> UserRateLimiter | None:
        """A source's own rate (sources.py), one bucket for all its senders; kept across reloads of the file
        while the rate stays the same."""
        if not source.rate_limit:
            return None
        limiter = self._source_limiters.get(source.name)
        if limiter is None or limiter.events_per_second != source.rate_limit:
            limiter = self._source_limiters[source.name] = UserRateLimiter(source.rate_limit, 0)
        return limiter

    def _limit_rate(self, request: IngestRequest, limiter: UserRateLimiter) -> Answer | None:
        """Keep the events the sender's rate allows; a 429 when it allows none. A batch kept in part has the
        others rejected by position, and its answer says when to send them again."""
        events = request.events
        granted = limiter.take(request.user_id, len(events))
        if granted == len(events):
            return None
        metrics.received_rate_limited.inc(len(events) - granted)
        retry_after = str(limiter.retry_after_seconds(request.user_id)).encode()
        if granted == 0:
            limit = "RATE_LIMIT_PER_USER" if request.source is None else f"source {request.source.name}'s rate_limit"
            return rate_limited_answer(retry_after, limit)
        batch = request.batch  # kept in part: more than one event, so the decoder recorded a batch
        assert batch is not None
        batch.rejected.extend(batch.rejection(position, "rate limit exceeded", None, 429)
                              for position in batch.positions[granted:])
        batch.rejected.sort(key=lambda rejection: rejection.index)
        request.events = events[:granted]
        request.retry_after = retry_after
        return None


def copied_headers(headers: dict[bytes, bytes]) -> dict[str, str | None]:
    copied: dict[str, str | None] = {}
    for wire_name, name in COPIED_HEADERS:
        value = headers.get(wire_name)
        if value is None:
            copied[name] = None
            continue
        # HTTP's optional whitespace around a value is not part of it; the parser keeps the trailing kind.
        value = value.strip(b" \t")
        # As text: UTF-8 when it is (what apps send), else latin-1, as HTTP defines header bytes; never a
        # U+FFFD in place of a byte the client sent. Inline: this runs for every copied header of a request.
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        if len(text) > MAX_STRING_CHARS:
            raise InvalidEvent(f"header {name} is longer than {MAX_STRING_CHARS} characters", name)
        copied[name] = text
    return copied
