"""Keys that rotate and public keys: which key verifies which token, and what start-up refuses."""

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from event_collector.api.auth import TokenVerifier, mint_token
from event_collector.api.keys import KeyRing, load_jwks, parse_secret
from event_collector.exceptions import AuthError, ConfigError
from event_collector.settings import load_settings

NOW = 1_800_000_000.0
CLAIMS = {"sub": "alice", "exp": NOW + 60}
OLD, NEW = "old-secret-" + "o" * 32, "new-secret-" + "n" * 32
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def public_jwk(key, kid: str, **extra) -> dict:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    return {**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, **extra}


def jwks_file(tmp_path, *keys: dict) -> str:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(keys)}))
    return str(path)


def ring(tmp_path=None, secret: str = "", keys: tuple = (), issuer: str = "", audience: str = "") -> KeyRing:
    environ = {"JWT_SECRET": secret, "JWT_ISSUER": issuer, "JWT_AUDIENCE": audience}
    if keys:
        environ["JWT_JWKS_FILE"] = jwks_file(tmp_path, *keys)
    return KeyRing.from_settings(load_settings(environ, env_file=None))


def verifier(keys: KeyRing) -> TokenVerifier:
    return TokenVerifier(keys, clock=lambda: NOW)


def hs256(secret: str, kid: str | None = None, claims: dict = CLAIMS) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": kid} if kid is not None else None)


KEY_SET = json.dumps({"2026-11": OLD, "2026-12": NEW})


def test_a_key_set_accepts_each_of_its_kids_during_a_rotation():
    keys = verifier(ring(secret=KEY_SET))
    assert keys.user_id(bearer(hs256(OLD, "2026-11"))) == "alice"
    assert keys.user_id(bearer(hs256(NEW, "2026-12"))) == "alice"


@pytest.mark.parametrize(("token", "message"), [
    (hs256(OLD, "2026-12"), "Signature verification failed"),  # a kid does not unlock another kid's secret
    (hs256(OLD, "2025-01"), "unknown kid"),
    (hs256(OLD), "no kid"),
])
def test_a_key_set_refuses_wrong_unknown_or_missing_kids(token, message):
    with pytest.raises(AuthError, match=message):
        verifier(ring(secret=KEY_SET)).user_id(bearer(token))


def test_a_removed_kid_is_refused_after_the_restart_even_though_it_was_cached():
    token = hs256(OLD, "2026-11")
    before = verifier(ring(secret=KEY_SET))
    assert before.user_id(bearer(token)) == "alice"
    assert bearer(token) in before._subjects
    # A restart with the old kid taken out builds a new verifier: its cache starts empty.
    after = verifier(ring(secret=json.dumps({"2026-12": NEW})))
    with pytest.raises(AuthError, match="unknown kid"):
        after.user_id(bearer(token))


def test_the_empty_kid_keeps_tokens_minted_before_the_key_set_working():
    keys = verifier(ring(secret=json.dumps({"": OLD, "2026-12": NEW})))
    assert keys.user_id(bearer(hs256(OLD))) == "alice"
    assert keys.user_id(bearer(hs256(NEW, "2026-12"))) == "alice"


def test_a_plain_secret_works_as_before_with_or_without_kid():
    keys = verifier(ring(secret=OLD))
    assert keys.user_id(bearer(hs256(OLD))) == "alice"
    assert keys.user_id(bearer(hs256(OLD, "anything"))) == "alice"
    # A plain secret holding the characters of another format still means itself.
    odd = "a:b,c:d" + "x" * 32
    assert verifier(ring(secret=odd)).user_id(bearer(hs256(odd))) == "alice"


@pytest.mark.parametrize(("value", "message"), [
    ("{not json", "not valid JSON"),
    ("{}", "empty key set"),
    ('{"a": ""}', "non-empty string"),
    ('{"a": 1}', "non-empty string"),
    ('{"a": "s1", "a": "s2"}', "twice"),
])
def test_a_bad_key_set_stops_start_up_without_quoting_secrets(value, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_secret(value)
    assert "s1" not in str(error.value) and "JWT_SECRET" in str(error.value)


def test_issuer_and_audience_are_checked_when_configured():
    keys = verifier(ring(secret=OLD, issuer="https://auth.example.com", audience="collector"))
    good = {**CLAIMS, "iss": "https://auth.example.com", "aud": "collector"}
    assert keys.user_id(bearer(hs256(OLD, claims=good))) == "alice"
    assert keys.user_id(bearer(hs256(OLD, claims={**good, "aud": ["other", "collector"]}))) == "alice"
    for claims, message in (({**good, "iss": "https://evil.example.com"}, "issuer"),
                            ({k: v for k, v in good.items() if k != "iss"}, "issuer"),
                            ({**good, "aud": "other"}, "audience"), ({**good, "aud": ["other"]}, "audience"),
                            ({k: v for k, v in good.items() if k != "aud"}, "audience"),
                            ({**good, "aud": {"collector": 1}}, "audience")):
        with pytest.raises(AuthError, match=message):
            keys.user_id(bearer(hs256(OLD, claims=claims)))


def test_rs256_and_es256_tokens_verify_against_the_jwks_by_kid(tmp_path):
    keys = verifier(ring(tmp_path, keys=(public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1"))))
    rs = jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(CLAIMS, EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert keys.user_id(bearer(rs)) == "alice"
    assert keys.user_id(bearer(es)) == "alice"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token, message in ((jwt.encode(CLAIMS, other, algorithm="RS256", headers={"kid": "rsa-1"}), "Signature"),
                           (jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-2"}), "unknown kid"),
                           (jwt.encode(CLAIMS, RSA_KEY, algorithm="RS256"), "needs a kid"),
                           (jwt.encode(CLAIMS, EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"}), "is for RS256"),
                           (jwt.encode(CLAIMS, RSA_KEY, algorithm="RS512", headers={"kid": "rsa-1"}), "not allowed"),
                           (jwt.encode(CLAIMS, RSA_KEY, algorithm="PS256", headers={"kid": "rsa-1"}), "not allowed"),
                           (hs256(OLD, "rsa-1"), "HS256 tokens are not accepted")):
        with pytest.raises(AuthError, match=message):
            keys.user_id(bearer(token))


def forged_hs256(secret: bytes, kid: str) -> str:
    """An HS256 token whose HMAC key is `secret` (PyJWT itself refuses to sign with a PEM key)."""
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}.{part(json.dumps(CLAIMS).encode())}"
    return f"{signing_input}.{part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("secret", [OLD, ""])
def test_the_public_key_is_never_an_hmac_secret(tmp_path, secret):
    """Key confusion: an attacker signs an HS256 token with the (public) RSA key as the HMAC secret."""
    keys = verifier(ring(tmp_path, secret=secret, keys=(public_jwk(RSA_KEY, "rsa-1"),)))
    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    jwk_json = json.dumps(public_jwk(RSA_KEY, "rsa-1")).encode()
    for key_bytes in (pem, pem.strip(), jwk_json):
        with pytest.raises(AuthError):
            keys.user_id(bearer(forged_hs256(key_bytes, "rsa-1")))


@pytest.mark.parametrize(("keys", "message"), [
    ([{"kty": "RSA"}], "every key needs a kid"),
    ([public_jwk(RSA_KEY, "a"), public_jwk(EC_KEY, "a")], "twice"),
    ([public_jwk(RSA_KEY, "a", use="enc")], "only signing keys"),
    ([{**RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True), "kid": "a"}], "private key"),
    ([public_jwk(RSA_KEY, "a", alg="RS512")], "only RS256 and ES256"),
    ([public_jwk(ec.generate_private_key(ec.SECP384R1()), "a")], "only RS256 and ES256"),
    ([public_jwk(ec.generate_private_key(ec.SECP384R1()), "a", alg="ES256")], "needs a EC key on P-256"),
    ([public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024), "a")], "too short"),
    ([{"kty": "oct", "k": "c2VjcmV0", "kid": "a"}], "only RS256 and ES256"),
    ([{"kty": "RSA", "kid": "a", "n": "!!", "e": "AQAB"}], "not a usable key"),
    ([], "at least one key"),
])
def test_a_jwks_file_with_a_key_we_would_not_verify_with_stops_start_up(tmp_path, keys, message):
    with pytest.raises(ConfigError, match=message) as error:
        load_jwks(jwks_file(tmp_path, *keys))
    assert "JWT_JWKS_FILE" in str(error.value)


def test_a_missing_or_unreadable_jwks_file_stops_start_up(tmp_path):
    for path in (tmp_path / "absent.json", tmp_path):
        with pytest.raises(ConfigError, match="JWT_JWKS_FILE"):
            load_jwks(str(path))


def test_no_key_at_all_stops_start_up():
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        ring()


def test_mint_token_signs_with_the_named_kid():
    token = mint_token(KEY_SET, "bob", 60, "2026-12")
    assert jwt.get_unverified_header(token)["kid"] == "2026-12"
    assert TokenVerifier(ring(secret=KEY_SET)).user_id(bearer(token)) == "bob"
    with pytest.raises(AuthError, match="--kid"):
        mint_token(KEY_SET, "bob", 60)
    with pytest.raises(AuthError, match="no kid"):
        mint_token(KEY_SET, "bob", 60, "1999")


def test_the_token_command_signs_with_the_chosen_kid(monkeypatch, capsys):
    from event_collector.cli import main

    monkeypatch.setenv("JWT_SECRET", KEY_SET)
    monkeypatch.chdir("/")  # no .env
    assert main(["token", "--sub", "carol", "--kid", "2026-11"]) == 0
    token = capsys.readouterr().out.strip()
    assert jwt.get_unverified_header(token)["kid"] == "2026-11"
    assert TokenVerifier(ring(secret=KEY_SET)).user_id(bearer(token)) == "carol"
    assert main(["token", "--sub", "carol"]) == 2
    assert "--kid" in capsys.readouterr().err
