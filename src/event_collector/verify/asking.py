"""What the checks share: their one way of asking over HTTP (a bounded JSON answer, aiohttp's errors
translated into ours) and what one poll found."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..exceptions import CheckRefused, CheckUnavailable
from .sender import retry_after_seconds

# An answer larger than this is not read: no honest answer to a check comes near it (a page of 10,000 ids
# from OpenSearch is under 1 MB).
MAX_ANSWER_BYTES = 32 << 20


@dataclass
class PollResult:
    """What one poll found. A poll that failed part-way keeps what it found before, and says why in `error`."""

    documents: dict[str, int] = field(default_factory=dict)     # id -> documents indexed under it
    states: dict[str, dict] = field(default_factory=dict)       # receipts: id -> a receipt other than indexed
    unsearchable: set[str] = field(default_factory=set)          # OpenSearch: indices that cannot answer
    error: str | None = None
    retry_after_seconds: float | None = None


async def post_json(session: aiohttp.ClientSession, what: str, url: str, body: dict[str, Any],
                    timeout_seconds: float, headers: dict[str, str] | None = None) -> tuple[int, Any, float | None]:
    """(status, the JSON answer or None when it is not JSON, Retry-After seconds) of one POST.

    Raises CheckRefused when TLS refuses the server's certificate (asking again will not help), and
    CheckUnavailable when no answer came (refused connection, reset, timeout) or it was too large."""
    try:
        async with session.post(url, json=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_seconds)) as response:
            raw = await response.content.read(MAX_ANSWER_BYTES + 1)
            if len(raw) > MAX_ANSWER_BYTES:
                raise CheckUnavailable(f"{what} answered more than {MAX_ANSWER_BYTES >> 20} MB")
            return response.status, _json_or_none(raw), retry_after_seconds(response.headers.get("Retry-After"))
    except aiohttp.ClientConnectorCertificateError as exc:
        raise CheckRefused(f"{what} at {url}: TLS refused the certificate ({exc.certificate_error}); "
                           "--insecure skips the check") from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise CheckUnavailable(f"{what} did not answer ({type(exc).__name__})") from None


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def error_text(answer: Any) -> str:
    """What an error answer says, shortly: OpenSearch's `error.reason`, the collector's `error`, else nothing."""
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict):
            error = error.get("reason") or error.get("type")
        if isinstance(error, str):
            return f": {error[:200]}"
    return ""
