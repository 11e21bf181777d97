"""Keys that rotate, issuer and audience, and public keys (JWKS), against a real collector and OpenSearch."""

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from support import CollectorProcess, event, wait_until

OLD, NEW = "old-secret-" + "o" * 32, "new-secret-" + "n" * 32
ISSUER, AUDIENCE = "https://auth.example.com", "event-collector"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def claims(subject: str, **extra) -> dict:
    now = int(time.time())
    return {"sub": subject, "iat": now, "exp": now + 600, "iss": ISSUER, "aud": AUDIENCE, **extra}


def hs256(secret: str, kid: str | None, subject: str, **extra) -> str:
    return jwt.encode(claims(subject, **extra), secret, algorithm="HS256", headers={"kid": kid} if kid else None)


def jwks(tmp_path) -> str:
    path = tmp_path / "jwks.json"
    keys = [{**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": "rsa-1", "use": "sig"},
            {**ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True), "kid": "ec-1"}]
    path.write_text(json.dumps({"keys": keys}))
    return str(path)


def send(collector: CollectorProcess, token: str) -> tuple[int, str]:
    sent = event()
    response = collector.http.post("/events", json=sent, headers={"Authorization": f"Bearer {token}"})
    return response.status_code, sent["log_id"]


def assert_indexed_as(opensearch, collector, expected: dict[str, str]) -> None:
    wait_until(lambda: set(expected) <= set(opensearch.log_id_counts(collector.environment)), timeout=30,
               message="the accepted events indexed")
    hits = opensearch.search(collector.environment, {"terms": {"log_id": list(expected)}})
    assert {hit["_source"]["log_id"]: hit["_source"]["user_id"] for hit in hits} == expected


def test_a_rotation_accepts_both_kids_then_refuses_the_removed_one_after_restart(tmp_path, opensearch):
    settings = dict(JWT_ISSUER=ISSUER, JWT_AUDIENCE=AUDIENCE, SERVER_ENVIRONMENT=None)
    during = CollectorProcess(tmp_path, JWT_SECRET=json.dumps({"2026-11": OLD, "2026-12": NEW}), **settings).start()
    old_token, new_token = hs256(OLD, "2026-11", "old-user"), hs256(NEW, "2026-12", "new-user")
    try:
        (old_status, old_id), (new_status, new_id) = send(during, old_token), send(during, new_token)
        assert (old_status, new_status) == (200, 200)
        # Sent again: now answered from the verifier's cache.
        assert send(during, old_token)[0] == 200
        assert send(during, hs256(NEW, "2026-11", "forger"))[0] == 401  # a kid selects its own secret only
        assert send(during, hs256(OLD, None, "no-kid"))[0] == 401
    finally:
        assert during.stop() == 0
    assert_indexed_as(opensearch, during, {old_id: "old-user", new_id: "new-user"})

    after = CollectorProcess(tmp_path, JWT_SECRET=json.dumps({"2026-12": NEW}), DATABASE=during.database,
                             **{**settings, "SERVER_ENVIRONMENT": during.environment}).start()
    try:
        refused = after.http.post("/events", json=event(), headers={"Authorization": f"Bearer {old_token}"})
        assert refused.status_code == 401
        assert "unknown kid" in refused.json()["error"]
        status, still_id = send(after, new_token)
        assert status == 200
    finally:
        after.stop()
    assert_indexed_as(opensearch, after, {old_id: "old-user", new_id: "new-user", still_id: "new-user"})


def forged_hs256(secret: bytes, kid: str) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (f"{part(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}."
                     f"{part(json.dumps(claims('attacker')).encode())}")
    return f"{signing_input}.{part(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("secret", [OLD, ""], ids=["with JWT_SECRET", "public keys only"])
def test_public_keys_issuer_audience_and_key_confusion(tmp_path, opensearch, collector_factory, secret):
    collector = collector_factory(JWT_SECRET=secret, JWT_JWKS_FILE=jwks(tmp_path), JWT_ISSUER=ISSUER,
                                  JWT_AUDIENCE=AUDIENCE)
    accepted = {}
    for name, token in (("rs", jwt.encode(claims("rs-user"), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})),
                        ("es", jwt.encode(claims("es-user"), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"}))):
        status, log_id = send(collector, token)
        assert status == 200, name
        accepted[log_id] = f"{name}-user"

    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    refused = {
        "HS256 signed with the RSA public key (key confusion)": forged_hs256(pem, "rsa-1"),
        "HS256 signed with the EC public key (key confusion)": forged_hs256(EC_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), "ec-1"),
        "RS256 under an unknown kid": jwt.encode(claims("u"), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-9"}),
        "RS256 by another key": jwt.encode(claims("u"), rsa.generate_private_key(public_exponent=65537, key_size=2048),
                                           algorithm="RS256", headers={"kid": "rsa-1"}),
        "another issuer": jwt.encode(claims("u", iss="https://evil.example.com"), RSA_KEY, algorithm="RS256",
                                     headers={"kid": "rsa-1"}),
        "another audience": jwt.encode(claims("u", aud="another-service"), EC_KEY, algorithm="ES256",
                                       headers={"kid": "ec-1"}),
        "alg none": forged_none(),
    }
    for name, token in refused.items():
        assert send(collector, token)[0] == 401, name
    if secret:
        status, log_id = send(collector, hs256(secret, None, "hs-user"))
        assert status == 200
        accepted[log_id] = "hs-user"
        assert send(collector, hs256(secret, None, "u", aud="another-service"))[0] == 401
    assert_indexed_as(opensearch, collector, accepted)
    assert opensearch.count(collector.environment) == len(accepted)


def forged_none() -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': 'rsa-1'})}.{part(claims('u'))}."


def test_a_bad_jwks_file_stops_start_up_with_one_line(tmp_path):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**RSAAlgorithm.to_jwk(RSA_KEY, as_dict=True), "kid": "private"}]}))
    result = subprocess.run([sys.executable, "-m", "event_collector.cli", "serve"], cwd=tmp_path, capture_output=True,
                            env={"PATH": "/usr/bin:/bin", "JWT_JWKS_FILE": str(path)}, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "JWT_JWKS_FILE" in result.stderr and "private key" in result.stderr
