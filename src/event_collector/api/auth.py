"""Bearer JWT authentication: `exp` and `sub` required, `sub` becomes the user id.

Verifying a signature costs far more than the rest of a request, and apps send many events with one
token, so each distinct token is verified once and its subject cached until the token's `exp`. A cache
hit is a dict lookup and an expiry check, nothing more: the cache is keyed by the Authorization value's
bytes as clients send it (`Bearer <token>`), so the usual request is looked up before any decoding; any
other spelling of the scheme is parsed and then looked up under that same key. That is safe because only a token in the one
canonical form is ever cached: PyJWT's base64 decoding skips junk characters, so without the strict form
one valid token would have endless spellings (`<token>!!!!…`) that all verify, each a new cache entry.
The cache belongs to one verifier, built from one set of keys: keys change only with a restart, which
starts with an empty cache, so a token of a kid taken out of the keys is never accepted from the cache.

What a token must be (anything else is a 401, whatever PyJWT or the JSON decoder raise on it):

- at most MAX_TOKEN_BYTES, three segments of unpadded base64url in canonical form (decoding and
  encoding again gives the segment back, so the unused trailing bits cannot make variants either);
- signed with the key its header selects (api/keys.py: HS256 under JWT_SECRET, or RS256/ES256 under the
  JWT_JWKS_FILE key its kid names), with that key's one algorithm (PyJWT checks the signature);
- claims: `sub` a string of 1 to MAX_SUBJECT_CHARS characters; `exp` a number (integer or finite float,
  not a boolean) in the future and at most MAX_LIFETIME_YEARS ahead; `nbf` and `iat` optional, numbers
  when present and not in the future; `iss` equal to JWT_ISSUER when that is set; `aud` holding
  JWT_AUDIENCE when that is set, else absent or empty (PyJWT's rule).
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
import time
from typing import Annotated, Any, Callable

import jwt
import msgspec

from ..exceptions import AuthError
from .keys import HMAC_ALGORITHM, PUBLIC_KEY_ALGORITHMS, KeyRing, parse_secret
from .validation import MAX_STRING_CHARS

# Room for any real token (a few hundred bytes); bounds what a miss decodes and what the cache holds.
MAX_TOKEN_BYTES = 8192
# The sub is the document's user_id, a keyword: bounded like the event's other strings, far below
# OpenSearch's 32,766-byte term limit (past which the document would be refused forever).
MAX_SUBJECT_CHARS = MAX_STRING_CHARS
# Longer than any sane token lifetime; refuses near-eternal tokens (a leaked one could only be revoked
# by rotating JWT_SECRET) and an exp written in milliseconds (~55,000 years ahead).
MAX_LIFETIME_YEARS = 10
_MAX_LIFETIME_SECONDS = MAX_LIFETIME_YEARS * 365 * 24 * 3600
# What one cache entry costs beside its two strings: the dict slot, the tuple and the float.
_ENTRY_OVERHEAD_BYTES = 200
# 10,000 entries of ordinary tokens take ~5 MB; this caps ~2,000 of the largest (MAX_TOKEN_BYTES) ones.
_CACHE_BYTES = 16 * 1024 * 1024

_COMPACT_FORM = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")
_JWS = jwt.PyJWS(algorithms=[HMAC_ALGORITHM, *PUBLIC_KEY_ALGORITHMS])
_BEARER = b"Bearer "


class _Claims(msgspec.Struct):
    # msgspec refuses booleans for numbers, NaN and Infinity (not JSON), and numbers beyond a float's
    # range (1e400, a 401-digit integer) rather than turning them into inf. Unknown claims are ignored.
    sub: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SUBJECT_CHARS)]
    exp: float
    nbf: float | msgspec.UnsetType = msgspec.UNSET
    iat: float | msgspec.UnsetType = msgspec.UNSET
    aud: Any = None
    iss: Any = None


_decode_claims = msgspec.json.Decoder(_Claims).decode


class TokenVerifier:
    def __init__(self, keys: KeyRing | str, cache_size: int = 10_000, cache_bytes: int = _CACHE_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        if isinstance(keys, str):
            if not keys:
                raise ValueError("an empty JWT secret would accept forged tokens")
            secret, secrets_by_kid = parse_secret(keys)
            keys = KeyRing(secret, secrets_by_kid)
        self._keys = keys
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._clock = clock
        # b"Bearer <token>" (the canonical header value of a verified token) -> (sub, exp).
        self._subjects: dict[bytes, tuple[str, float]] = {}
        self._cached_bytes = 0

    def user_id(self, authorization: bytes | None) -> str:
        """The `sub` of the Bearer token in an Authorization header value, or AuthError."""
        if not authorization:
            raise AuthError("missing Authorization header")
        cached = self._subjects.get(authorization)
        # A cached token is never trusted past its expiry.
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization must be 'Bearer <token>'")
        token = token.strip()
        key = _BEARER + token.encode("latin-1")
        if key != authorization:
            cached = self._subjects.get(key)
            if cached is not None and cached[1] > self._clock():
                return cached[0]
        return self._verify(token, key)

    def _verify(self, token: str, cache_key: bytes) -> str:
        _check_compact_form(token)
        try:
            # The header is read unverified only to pick the key; the key then fixes the one algorithm.
            key, algorithm = self._keys.key_for(_JWS.get_unverified_header(token))
            payload = _JWS.decode_complete(token, key, algorithms=[algorithm])["payload"]
        except AuthError:
            raise
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        except Exception as exc:
            # Hostile input makes PyJWT raise more than its own errors (a header of deeply nested JSON
            # raises RecursionError): whatever it is, the token cannot be read.
            raise AuthError(f"invalid token: unreadable ({type(exc).__name__})") from None
        try:
            claims = _decode_claims(payload)
        except msgspec.MsgspecError as exc:
            raise AuthError(f"invalid token claims: {exc}") from None
        self._check_times(claims)
        self._check_issuer_and_audience(claims)
        self._remember(cache_key, claims.sub, claims.exp)
        return claims.sub

    def _check_times(self, claims: _Claims) -> None:
        now = self._clock()
        if claims.exp <= now:
            raise AuthError("token has expired")
        if claims.exp > now + _MAX_LIFETIME_SECONDS:
            raise AuthError(f"invalid token: exp is more than {MAX_LIFETIME_YEARS} years ahead")
        if claims.nbf is not msgspec.UNSET and claims.nbf > now:
            raise AuthError("token is not valid yet (nbf)")
        if claims.iat is not msgspec.UNSET and claims.iat > now:
            raise AuthError("token is not valid yet (iat)")

    def _check_issuer_and_audience(self, claims: _Claims) -> None:
        issuer, audience = self._keys.issuer, self._keys.audience
        if issuer is not None and claims.iss != issuer:
            raise AuthError("invalid token: its issuer (iss) is not JWT_ISSUER")
        if audience is None:
            if claims.aud:
                raise AuthError("invalid token: it names an audience, and none is configured")
        elif not (claims.aud == audience or (isinstance(claims.aud, list) and audience in claims.aud)):
            raise AuthError("invalid token: its audience (aud) does not include JWT_AUDIENCE")

    def _remember(self, key: bytes, subject: str, expires: float) -> None:
        cost = sys.getsizeof(key) + sys.getsizeof(subject) + _ENTRY_OVERHEAD_BYTES
        if len(self._subjects) >= self._cache_size or self._cached_bytes + cost > self._cache_bytes:
            # Dropping everything is cheap and rare; live tokens are simply verified again.
            self._subjects.clear()
            self._cached_bytes = 0
        # Present already only if the clock stepped back since the entry expired: count it once.
        if key not in self._subjects:
            self._cached_bytes += cost
        self._subjects[key] = (subject, expires)


def _check_compact_form(token: str) -> None:
    """Refuse any token but one within MAX_TOKEN_BYTES in canonical unpadded base64url: the one
    spelling of its bytes, so that a token's variants are refused and never reach the cache."""
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError(f"invalid token: longer than {MAX_TOKEN_BYTES} bytes")
    match = _COMPACT_FORM.fullmatch(token)
    if match is None:
        raise AuthError("invalid token: not three segments of unpadded base64url")
    for segment in match.groups():
        try:
            decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        except binascii.Error:
            raise AuthError("invalid token: a segment is not base64url") from None
        if base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() != segment:
            raise AuthError("invalid token: a segment is not in canonical base64url")


def mint_token(secret: str, subject: str, ttl_seconds: float, kid: str | None = None) -> str:
    """An HS256 token signed with a plain JWT_SECRET, or with the key set's secret for `kid`."""
    plain, secrets_by_kid = parse_secret(secret)
    if plain is None:
        if kid is None and "" not in secrets_by_kid:
            raise AuthError("JWT_SECRET holds a key set: name the key with --kid")
        if (kid or "") not in secrets_by_kid:
            raise AuthError(f"JWT_SECRET has no kid {kid!r}")
        plain = secrets_by_kid[kid or ""]
    now = int(time.time())
    headers = {"kid": kid} if kid else None
    return jwt.encode({"sub": subject, "iat": now, "exp": now + int(ttl_seconds)}, plain, algorithm="HS256",
                      headers=headers)
