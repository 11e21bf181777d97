"""Logging: one format for every line the process writes, no secret in any, and readable when the same
thing goes wrong thousands of times a minute.

`JsonFormatter` writes one JSON object per line (LOG_FORMAT=json), `TextFormatter` one line of text; both
take secrets out (`Redactor`). `RepeatFilter` lets the first record of a kind through (a kind is the
logger, level and message template, whatever its arguments), then drops the same kind for
`interval_seconds`; the next one that passes says how many were dropped. CRITICAL records always pass:
they mean events were lost. `log_config` puts them together for every process, uvicorn's loggers included.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable

import msgspec

_encode = msgspec.json.encode


class RepeatFilter(logging.Filter):
    def __init__(self, interval_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_seconds = interval_seconds
        self._clock = clock
        # kind -> (when it was last let through, how many were dropped since)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        passed_at, dropped = self._seen.get(kind, (None, 0))
        if passed_at is not None and now - passed_at < self.interval_seconds:
            self._seen[kind] = (passed_at, dropped + 1)
            return False
        if dropped:
            record.msg = f"{record.msg} [{dropped} more like this in the last {now - passed_at:.0f} s]"
        if len(self._seen) > 1000:  # templates are few; this only guards against unbounded growth
            self._seen.clear()
        self._seen[kind] = (now, 0)
        return True


class QueryRedactingFilter(logging.Filter):
    """Replaces the query string of every path in a record's arguments (uvicorn's access log line) by
    `?[redacted]`: `POST /events/beacon?token=…` carries a token, and the collector's routes read no other
    query parameter, so the whole query goes (a decoder-dependent spelling like `%74oken=` cannot slip by)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_is_path_with_query(arg) for arg in record.args):
            record.args = tuple(_redacted(arg) if _is_path_with_query(arg) else arg for arg in record.args)
        return True


def _is_path_with_query(value: object) -> bool:
    # Not only "/…": uvicorn logs the root path, and a client may send any request target.
    return isinstance(value, str) and "?" in value


def _redacted(path: str) -> str:
    return path.partition("?")[0] + "?[redacted]"
# -- formats -------------------------------------------------------------------------------------------

# What a secret looks like wherever it might slip into a message (an exception's text, a URL, a header):
# a JWT (its header always starts `{"`, base64url `eyJ`), the credentials after an HTTP auth scheme (8
# characters at least, so that prose such as "basic checks" is left alone), and the password in a URL's
# user info.
_SECRET_SHAPES = (
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)?"), "[redacted token]"),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9+/=._~-]{8,}"), r"\1\2[redacted]"),
    (re.compile(r"(://[^/\s:@]*:)[^@\s/]+@"), r"\1[redacted]@"),
)
# Secret values shorter than this are not searched for: every short word of every line would match.
_SHORTEST_SECRET = 4


class Redactor:
    """Takes secrets out of text: the configured values (JWT_SECRET, passwords) and anything shaped like a
    token or credentials. The last line of defence: nothing the collector logs on purpose holds a secret."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= _SHORTEST_SECRET}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "[redacted]")
        for shape, replacement in _SECRET_SHAPES:
            text = shape.sub(replacement, text)
        return text


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger>: <message>`, for a person at a terminal."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


# A LogRecord's own attributes; any other attribute came from `extra=` and becomes a field of its own.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime",
                                                                                        "color_message"}
# uvicorn's access records carry their parts as arguments: these name them.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, the record's extra
    fields, and `exception` with the traceback; for log shippers (Fluent Bit, Vector, Data Prepper)."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__()
        self._redact = Redactor(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            entry.update(zip(_ACCESS_FIELDS, record.args))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Redacted as one text, so that every field is covered, extra ones included.
        return self._redact(_encode(entry, enc_hook=str).decode())


def _utc_iso(created: float) -> str:
    moment = datetime.fromtimestamp(created, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def log_config(log_format: str, level: str, secrets: list[str]) -> dict[str, Any]:
    """The logging configuration of every process: the collector's records and uvicorn's own (its error
    and access loggers) in one format, with the same repeat limit and redaction, and the root logger's
    (libraries') too. uvicorn applies it in every worker process."""
    formatter = {"()": JsonFormatter if log_format == "json" else TextFormatter, "secrets": list(secrets)}

    def handler() -> dict[str, Any]:
        return {"class": "logging.StreamHandler", "formatter": "collector", "stream": "ext://sys.stderr",
                "filters": ["repeats"]}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"collector": formatter},
        # The same error repeated (OpenSearch down, disk full, a flood of bad requests) is logged once per
        # interval with a count.
        # A beacon may carry its token in the URL: no query string reaches the access log.
        "filters": {"repeats": {"()": RepeatFilter}, "redact_queries": {"()": QueryRedactingFilter}},
        # The access log is one line per request by design: no repeat limit there (every line has one template).
        "handlers": {"collector": handler(), "access": {**handler(), "filters": ["redact_queries"]}},
        "root": {"handlers": ["collector"], "level": level},
        "loggers": {
            "event_collector": {"level": level},
            "uvicorn": {"handlers": ["collector"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
    }
