"""The keys tokens may be signed with, and which key verifies which token (docs/security.md, keys).

- `JWT_SECRET`: HS256 secrets. A plain value is one secret, for every HS256 token, as it always was. A JSON
  object is a key set, `{"2026-11": "secret-a", "2026-12": "secret-b"}`: a token's `kid` header picks its
  secret, so an old and a new secret are both valid during a rotation, and a kid taken out of the set is
  refused. The entry `""` is for tokens without a kid (the secret they were minted with before the set).
  JSON rather than a `kid:secret,…` list because a secret may hold any character, and because a plain
  secret that happened to contain `:` or `,` must keep meaning what it meant.
- `JWT_JWKS_FILE`: public keys (RS256, ES256) in a JWKS file, picked by `kid`, so the service that issues
  tokens need not share a secret with the collector.

The algorithm a token may use follows from the key that verifies it, never from the token's own `alg`: an
HS256 token is only ever checked against JWT_SECRET, an RS256/ES256 token only against the JWKS key its kid
names, and that key's one algorithm. So a public key can never serve as an HMAC secret (the classic key
confusion), and `none` or any other algorithm is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from ..exceptions import AuthError, ConfigError

HMAC_ALGORITHM = "HS256"
# A JWKS key may verify one of these; its curve must be the one its algorithm is defined on.
PUBLIC_KEY_ALGORITHMS = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}
# NIST's floor for RSA signatures since 2013; PyJWT would only warn.
MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class KeyRing:
    # Plain JWT_SECRET: the secret for every HS256 token, whatever its kid. None when a key set is given.
    secret: str | None = None
    # JWT_SECRET as a key set: kid -> secret ("" for tokens without a kid).
    secrets_by_kid: dict[str, str] = field(default_factory=dict)
    # JWT_JWKS_FILE: kid -> public key, bound to its one algorithm.
    public_keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    issuer: str | None = None
    audience: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> "KeyRing":
        """The keys of JWT_SECRET and JWT_JWKS_FILE, or ConfigError naming the variable at fault."""
        secret, secrets_by_kid = parse_secret(settings.jwt_secret)
        public_keys = load_jwks(settings.jwt_jwks_file) if settings.jwt_jwks_file else {}
        # A collector of SOURCES_FILE alone serves the tracking API; its JWT API then refuses every token.
        if secret is None and not secrets_by_kid and not public_keys and not settings.sources_file:
            raise ConfigError("JWT_SECRET is empty or missing (and no JWT_JWKS_FILE is set): "
                              "set it in the environment or in .env")
        return cls(secret, secrets_by_kid, public_keys, settings.jwt_issuer or None, settings.jwt_audience or None)

    def key_for(self, header: dict[str, Any]) -> tuple[str | jwt.PyJWK, str]:
        """The key that verifies a token with this (unverified) header, and the one algorithm allowed."""
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm == HMAC_ALGORITHM:
            if self.secret is not None:
                return self.secret, HMAC_ALGORITHM
            if not self.secrets_by_kid:
                raise AuthError("invalid token: HS256 tokens are not accepted (JWT_SECRET is not set)")
            secret = self.secrets_by_kid.get("" if kid is None else kid)
            if secret is None:
                raise AuthError("invalid token: no kid" if kid is None else "invalid token: unknown kid")
            return secret, HMAC_ALGORITHM
        if algorithm in PUBLIC_KEY_ALGORITHMS:
            if kid is None:
                raise AuthError(f"invalid token: an {algorithm} token needs a kid")
            key = self.public_keys.get(kid)
            if key is None:
                raise AuthError("invalid token: unknown kid")
            if key.algorithm_name != algorithm:
                raise AuthError(f"invalid token: key {kid!r} is for {key.algorithm_name}, not {algorithm}")
            return key, algorithm
        raise AuthError("invalid token: the algorithm is not allowed (HS256, RS256 and ES256 are)")


def parse_secret(value: str) -> tuple[str | None, dict[str, str]]:
    """JWT_SECRET as (plain secret, None) or (None, key set); an empty value is neither."""
    if not value:
        return None, {}
    if not value.lstrip().startswith("{"):
        return value, {}
    try:
        pairs = json.loads(value, object_pairs_hook=list)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"JWT_SECRET looks like a JSON key set but is not valid JSON: {exc}") from None
    kids = [kid for kid, _ in pairs]
    if not pairs:
        raise ConfigError("JWT_SECRET is an empty key set: give at least one kid and its secret")
    if len(set(kids)) != len(kids):
        raise ConfigError("JWT_SECRET names a kid twice")
    for kid, secret in pairs:
        if not isinstance(secret, str) or not secret:
            # Never quote the value: it is a secret.
            raise ConfigError(f"JWT_SECRET: the secret of kid {kid!r} must be a non-empty string")
    return None, dict(pairs)


def load_jwks(path: str) -> dict[str, jwt.PyJWK]:
    """The public keys of a JWKS file, by kid; every key must be one we would verify with."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"JWT_JWKS_FILE={path!r}: cannot read it as JSON: {exc}") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"JWT_JWKS_FILE={path!r}: expected a JWKS, {{\"keys\": [...]}} with at least one key")
    public_keys: dict[str, jwt.PyJWK] = {}
    for data in keys:
        kid = data.get("kid") if isinstance(data, dict) else None
        if not isinstance(kid, str) or not kid:
            raise ConfigError(f"JWT_JWKS_FILE={path!r}: every key needs a kid")
        if kid in public_keys:
            raise ConfigError(f"JWT_JWKS_FILE={path!r}: kid {kid!r} is there twice")
        public_keys[kid] = _public_key(path, kid, data)
    return public_keys


def _public_key(path: str, kid: str, data: dict[str, Any]) -> jwt.PyJWK:
    where = f"JWT_JWKS_FILE={path!r}, key {kid!r}"
    if data.get("use", "sig") != "sig":
        raise ConfigError(f"{where}: its use is {data['use']!r}; only signing keys (sig) belong here")
    if "d" in data:
        raise ConfigError(f"{where}: holds a private key; the collector needs only the public part")
    try:
        key = jwt.PyJWK(data)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: not a usable key: {exc}") from None
    expected = PUBLIC_KEY_ALGORITHMS.get(key.algorithm_name)
    if expected is None:
        raise ConfigError(f"{where}: is for {key.algorithm_name}; only RS256 and ES256 keys are accepted")
    kty, curve = expected
    if data.get("kty") != kty or (curve is not None and data.get("crv") != curve):
        raise ConfigError(f"{where}: {key.algorithm_name} needs a {kty} key" + (f" on {curve}" if curve else ""))
    if kty == "RSA" and key.key.key_size < MIN_RSA_BITS:
        raise ConfigError(f"{where}: an RSA key of {key.key.key_size} bits is too short (at least {MIN_RSA_BITS})")
    return key
