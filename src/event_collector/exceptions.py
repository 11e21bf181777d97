"""The collector's exceptions; library errors are translated into these at the boundary.

CollectorError
 ├── ConfigError            a setting is missing or invalid; start-up stops with its message
 ├── AuthError              the request's credentials are missing or invalid (401)
 ├── InvalidEvent           the request body is not an acceptable event (400 / 413)
 │    ├── BodyTooLarge      the body exceeds MAX_BODY_BYTES (413)
 │    └── UnsupportedEncoding  a Content-Encoding other than gzip or identity (415)
 ├── StoreError             the pending store failed (SQLite errors are wrapped in this)
 │    ├── StoreFull         the pending store is at its cap (503)
 │    └── KafkaUnavailable  ACK_MODE=kafka: the brokers did not acknowledge the events in time (503)
 ├── OpenSearchUnavailable  OpenSearch could not be reached or did not answer in time
 ├── CheckRefused           `event-collector verify`: its check was refused (credentials, no such route); exit 2
 └── CheckUnavailable       `event-collector verify`: the check's source did not answer this time; asked again
"""

from __future__ import annotations


class CollectorError(Exception):
    pass


class ConfigError(CollectorError):
    pass


class AuthError(CollectorError):
    pass


class InvalidEvent(CollectorError):
    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class BodyTooLarge(InvalidEvent):
    status = 413


class UnsupportedEncoding(InvalidEvent):
    status = 415


class StoreError(CollectorError):
    pass


class StoreFull(StoreError):
    pass


class KafkaUnavailable(StoreError):
    """In ACK_MODE=kafka the brokers are the store: what cannot be acknowledged is answered 503 like a
    failing pending store."""


class OpenSearchUnavailable(CollectorError):
    pass


class CheckRefused(CollectorError):
    """verify cannot check at all: asking again would be refused again, so it stops (exit 2)."""


class CheckUnavailable(CollectorError):
    """One poll of verify's check failed (no answer, 5xx, 429): the next poll asks again."""
