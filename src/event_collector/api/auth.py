"""Bearer JWT authentication: HS256 only, `exp` required, `sub` becomes the user id.

Verifying a signature costs far more than the rest of a request, and apps send many events with one
token, so each distinct token is verified once and its subject cached until the token's `exp`.
"""

from __future__ import annotations

import time

import jwt

from ..exceptions import AuthError

_ALGORITHMS = ["HS256"]
_OPTIONS = {"require": ["exp", "sub"]}


class TokenVerifier:
    def __init__(self, secret: str, cache_size: int = 10_000) -> None:
        if not secret:
            raise ValueError("an empty JWT secret would accept forged tokens")
        self._secret = secret
        self._cache_size = cache_size
        self._subjects: dict[str, tuple[str, float]] = {}

    def user_id(self, authorization: bytes | None) -> str:
        """The `sub` of the Bearer token in an Authorization header value, or AuthError."""
        if not authorization:
            raise AuthError("missing Authorization header")
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization must be 'Bearer <token>'")
        token = token.strip()
        cached = self._subjects.get(token)
        # A cached token is never trusted past its expiry.
        if cached is not None and cached[1] > time.time():
            return cached[0]
        return self._verify(token)

    def _verify(self, token: str) -> str:
        try:
            claims = jwt.decode(token, self._secret, algorithms=_ALGORITHMS, options=_OPTIONS)
        except jwt.ExpiredSignatureError:
            raise AuthError("token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        subject = claims["sub"]
        if not isinstance(subject, str):
            raise AuthError("invalid token: sub must be a string")
        if len(self._subjects) >= self._cache_size:
            # Dropping everything is cheap and rare; live tokens are simply verified again.
            self._subjects.clear()
        self._subjects[token] = (subject, float(claims["exp"]))
        return subject


def mint_token(secret: str, subject: str, ttl_seconds: float) -> str:
    now = int(time.time())
    return jwt.encode({"sub": subject, "iat": now, "exp": now + int(ttl_seconds)}, secret, algorithm="HS256")
