"""Answers as the bytes uvicorn would write for them, for what the protocol writes itself: the fast path's
answers and its own refusals of a connection or of a request head (api/protocol.py)."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from .answers import STATUS_ANSWERS, Answer, Headers, answer


class _AnswerBytes:
    """Encodes answers; the two 200s once per set of default headers: uvicorn replaces that list when its
    Date changes, once a second, so between two changes every answer of a kind is the same bytes."""

    def __init__(self) -> None:
        self._default_headers: Headers | None = None
        self._status_bytes: dict[tuple[int, bool], bytes] = {}

    def encode(self, whole: Answer, default_headers: Headers, keep_alive: bool) -> tuple[bytes, bool]:
        """The answer's bytes as uvicorn writes them (status line, default headers such as date and server, the
        answer's headers, `connection: close` when the connection ends), and whether the connection stays
        open: `keep_alive`, unless the answer closes it."""
        # By identity: only the constant answers are ever looked up here. One call for the usual answer:
        # this runs for every request of the fast path.
        key = (id(whole), keep_alive)
        if key[0] not in _STATUS_ANSWER_IDS:
            keep_alive = keep_alive and not any(name == b"connection" and value == b"close"
                                                for name, value in whole[1])
            return _encode(whole, default_headers, keep_alive), keep_alive
        if default_headers is not self._default_headers:
            self._default_headers = default_headers
            self._status_bytes = {}
        encoded = self._status_bytes.get(key)
        if encoded is None:
            encoded = self._status_bytes[key] = _encode(whole, default_headers, keep_alive)
        return encoded, keep_alive


_STATUS_ANSWER_IDS = frozenset(id(whole) for whole in STATUS_ANSWERS.values())
encode = _AnswerBytes().encode


def refusal(status: int, reason: str, default_headers: Headers, extra: Headers | None = None) -> bytes:
    """A JSON error the protocol answers before the app sees a request, on a connection it then closes."""
    return _encode(answer(status, {"error": reason}, extra), default_headers, keep_alive=False)


def _encode(whole: Answer, default_headers: Headers, keep_alive: bool) -> bytes:
    status, headers, body = whole
    parts = [STATUS_LINE[status]]
    closing = False
    for name, value in (*default_headers, *headers):
        parts += (name, b": ", value, b"\r\n")
        closing = closing or (name == b"connection" and value == b"close")
    if not keep_alive and not closing:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)
