"""POST /v1/receipts: what became of the events a caller sent (receipts.py answers; docs/receipts.md).

The caller is named as on the route that sent the events: `Authorization: Bearer <JWT>` (api/auth.py, the
token's `sub`) or a source's write key as HTTP Basic's user name (api/tracking_routes.WriteKey). Both are
checked, and the caller's rate taken, from the head alone, before the body is read. The body is small
(MAX_RECEIPTS_BODY_BYTES) and names 1 to MAX_RECEIPT_IDS distinct event ids.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .. import metrics
from ..exceptions import AuthError, BodyTooLarge, InvalidEvent, OpenSearchUnavailable, StoreError
from ..receipts import Caller, Receipts
from ..settings import Settings
from .answers import Answer, Send, answer, send_answer, unavailable_answer
from .auth import TokenVerifier
from .body import ClientDisconnected, Receive, decoded, read_body
from .deadlines import BodyReadDeadlines
from .ratelimit import UserRateLimiter
from .tracking_routes import OriginNotAllowed, WriteKey, basic_user
from .validation import MAX_LOG_ID_BYTES

RECEIPTS_PATH = b"/v1/receipts"
MAX_RECEIPTS_BODY_BYTES = 64 * 1024
MAX_RECEIPT_IDS = 1000


class _Request(msgspec.Struct):
    ids: list[str]


_decode_request = msgspec.json.Decoder(_Request).decode


def decode_ids(body: bytes) -> list[str]:
    """The ids a receipts body asks for, or InvalidEvent (400) naming what is wrong."""
    try:
        ids = _decode_request(body).ids
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"the body must be {{\"ids\": [\"<event id>\", ...]}}: {exc}", "ids") from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError:
        raise InvalidEvent("the body is not valid UTF-8") from None
    except RecursionError:
        # msgspec gives up on JSON nested deeper than Python's recursion limit, even in a field it skips.
        raise InvalidEvent("the body is nested too deeply to be a receipts request") from None
    if not ids:
        raise InvalidEvent("ids is empty: name 1 to 1000 event ids", "ids")
    if len(ids) > MAX_RECEIPT_IDS:
        raise InvalidEvent(f"ids names {len(ids)} events; at most {MAX_RECEIPT_IDS} a request", "ids")
    for position, log_id in enumerate(ids):
        # No event has such an id (api/validation.py refuses it): asking for one is a mistake, said as one.
        if not log_id or len(log_id.encode("utf-8", "surrogatepass")) > MAX_LOG_ID_BYTES:
            raise InvalidEvent(f"ids[{position}] is not an event id: 1 to {MAX_LOG_ID_BYTES} bytes of UTF-8", "ids")
    if len(set(ids)) != len(ids):
        raise InvalidEvent("ids must be distinct", "ids")
    return ids


class ReceiptsRoute:
    def __init__(self, settings: Settings, verifier: TokenVerifier, write_key: WriteKey, receipts: Receipts) -> None:
        self._verifier = verifier
        self._write_key = write_key
        self._receipts = receipts
        rate = settings.receipts_rate_limit
        # Two seconds' worth at once: a client may ask again right after a first answer without a 429.
        self._limiter = UserRateLimiter(rate, int(2 * rate)) if rate > 0 else None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send,
                       deadlines: BodyReadDeadlines) -> None:
        whole = await self._answer(scope, receive, deadlines)
        if whole is not None:  # None: the client left before its body was complete; nobody to answer
            await send_answer(send, whole)

    async def _answer(self, scope: dict[str, Any], receive: Receive, deadlines: BodyReadDeadlines) -> Answer | None:
        headers: dict[bytes, bytes] = dict(scope["headers"])
        try:
            caller = self._caller(headers)
        except OriginNotAllowed as exc:
            return _refusal("forbidden", 403, exc.message)
        except AuthError as exc:
            return _refusal("unauthorized", 401, str(exc), [(b"www-authenticate", b'Bearer, Basic realm="receipts"')])
        if self._limiter is not None and not self._limiter.take(caller.key, 1):
            retry_after = str(self._limiter.retry_after_seconds(caller.key)).encode()
            return _refusal("rate_limited", 429, "rate limit exceeded: RECEIPTS_RATE_LIMIT requests a second",
                            [(b"retry-after", retry_after)])
        try:
            body = await read_body(receive, headers, MAX_RECEIPTS_BODY_BYTES, deadlines)
            encoding = headers.get(b"content-encoding")
            ids = decode_ids(body if encoding is None else decoded(body, encoding, MAX_RECEIPTS_BODY_BYTES))
        except BodyTooLarge:
            return _refusal("too_large", 413, f"a receipts body is at most {MAX_RECEIPTS_BODY_BYTES} bytes")
        except InvalidEvent as exc:
            return _refusal("invalid", exc.status, exc.message, field=exc.field)
        except TimeoutError:
            return _refusal("timeout", 408, "request body not received in time")
        except ClientDisconnected:
            return None
        try:
            receipts = await self._receipts.answer(caller, ids)
        except (OpenSearchUnavailable, StoreError) as exc:
            metrics.receipts_requests.labels("unavailable").inc()
            return unavailable_answer(f"receipts cannot be looked up now: {exc}")
        metrics.receipts_requests.labels("answered").inc()
        for receipt in receipts.values():
            metrics.receipts_answered.labels(receipt["state"]).inc()
        return answer(200, {"receipts": receipts})

    def _caller(self, headers: dict[bytes, bytes]) -> Caller:
        authorization = headers.get(b"authorization")
        key = basic_user(authorization)
        if key is not None:
            source = self._write_key.source_of(key, headers.get(b"origin"))
            return Caller(source=source.name, index_prefix=source.prefix)
        return Caller(user_id=self._verifier.user_id(authorization))


def _refusal(outcome: str, status: int, message: str, extra: list | None = None, field: str | None = None) -> Answer:
    metrics.receipts_requests.labels(outcome).inc()
    return answer(status, {"error": message} if field is None else {"error": message, "field": field}, extra)
