"""An ingest request's body: read from ASGI within MAX_BODY_BYTES and its deadline, and its Content-Encoding
undone. (The protocol's fast path has the whole body before the pipeline runs: api/fast_dispatch.py.)"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from ..exceptions import BodyTooLarge, UnsupportedEncoding
from .batch import inflate
from .deadlines import BodyReadDeadlines

Receive = Callable[[], Awaitable[dict[str, Any]]]


class ClientDisconnected(Exception):
    """The client closed the connection before sending its whole body: the request never happened."""


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int, deadlines: BodyReadDeadlines) -> bytes:
    """The whole body, or BodyTooLarge past `limit` bytes (declared or sent), TimeoutError past its deadline,
    ClientDisconnected."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    # A client that stalls mid-body only holds its own connection, and only until its deadline.
    task = asyncio.current_task()
    assert task is not None
    deadlines.start(task)
    try:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    except asyncio.CancelledError:
        if deadlines.expired(task):
            raise TimeoutError from None
        raise
    finally:
        deadlines.stop(task)


def too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"body exceeds MAX_BODY_BYTES ({limit} bytes)")


def decoded(body: bytes, content_encoding: bytes, limit: int) -> bytes:
    """The body with its Content-Encoding undone: gzip (bounded: a bomb stops at `limit`)."""
    encoding = content_encoding.strip().lower()
    if encoding == b"gzip":
        return inflate(body, limit)
    if encoding in (b"identity", b""):
        return body
    raise UnsupportedEncoding(f"unsupported Content-Encoding {encoding.decode('latin-1')!r}: use gzip")
