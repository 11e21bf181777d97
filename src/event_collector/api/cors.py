"""CORS for the ingest routes, so web pages on other origins may send events (docs/browsers.md).

CORS_ALLOWED_ORIGINS lists the origins (or `*`); empty, the default, turns CORS off and the collector
answers as it always did (OPTIONS gets 405). With it on:

- a preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed origin gets 204 with
  the method, the headers a page may send and how long the browser may cache the answer; from any other
  origin a 403 without CORS headers, which the browser reports as a failed preflight;
- every answer of an ingest route to an allowed origin carries Access-Control-Allow-Origin, errors
  included, so a page can read a 400's reason or a 429's Retry-After; a disallowed origin gets no CORS
  header, so its page can read nothing.

The allowed origin is echoed rather than answered with `*`, even when `*` is configured: a beacon is sent in
the browser's credentials mode "include", where `*` is not accepted. Credentials themselves are not allowed
(no Access-Control-Allow-Credentials): the collector's credential is the token, never a cookie.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

Send = Callable[[dict[str, Any]], Awaitable[None]]

# What a page sends: the token, the body's type and encoding, and the device headers copied into documents;
# and X-Retry-Count, which analytics-next adds to every retry of a tracking message (without it here each retry
# fails its preflight, and the message is retried until the SDK gives it up).
ALLOWED_HEADERS = (b"authorization, content-type, content-encoding, device-uuid, app-version, os-version, "
                   b"x-retry-count")
ALLOWED_METHODS = b"POST"
# Chromium caps a preflight's cache at 2 hours, Firefox at 24: ask for Chromium's cap.
MAX_AGE_SECONDS = 7200
# A page reads these on an answer besides the CORS-safelisted ones: when to retry after 429 and 503.
EXPOSED_HEADERS = b"retry-after"


class CorsPolicy:
    def __init__(self, allowed_origins: str) -> None:
        # Browsers send scheme and host in lower case; settings.py has checked the form of each origin.
        origins = {origin.strip().lower() for origin in allowed_origins.split(",") if origin.strip()}
        self.any_origin = "*" in origins
        self.origins = {origin.encode() for origin in origins - {"*"}}

    @classmethod
    def from_setting(cls, allowed_origins: str) -> "CorsPolicy | None":
        return cls(allowed_origins) if allowed_origins.strip() else None

    def allowed_origin(self, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """The request's Origin when it is allowed, else None."""
        origin = _header(headers, b"origin")
        if origin is not None and (self.any_origin or origin in self.origins):
            return origin
        return None

    def preflight_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
            (b"vary", b"origin"),
        ]

    def answering(self, send: Send, origin: bytes) -> Send:
        """`send` with the CORS headers of an allowed origin added to the answer's start."""
        extra = [(b"access-control-allow-origin", origin), (b"access-control-expose-headers", EXPOSED_HEADERS),
                 (b"vary", b"origin")]

        async def send_with_cors(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                # A copy: the hot path's answers are built once and shared by every request.
                message = {**message, "headers": [*message["headers"], *extra]}
            await send(message)

        return send_with_cors


def is_preflight(headers: list[tuple[bytes, bytes]]) -> bool:
    return _header(headers, b"origin") is not None and _header(headers, b"access-control-request-method") is not None


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
