import time

import jwt
import pytest

from event_collector.api.auth import TokenVerifier, mint_token
from event_collector.exceptions import AuthError
from support import wait_until

SECRET = "s" * 40


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def test_a_minted_token_gives_its_subject():
    assert TokenVerifier(SECRET).user_id(bearer(mint_token(SECRET, "alice", 60))) == "alice"


def test_an_empty_secret_is_refused():
    with pytest.raises(ValueError):
        TokenVerifier("")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing"),
        (b"", "missing"),
        (b"Basic dXNlcjpwYXNz", "Bearer"),
        (b"Bearer ", "Bearer"),
        (b"Bearer not.a.token", "invalid token"),
    ],
)
def test_malformed_headers_are_refused(header, message):
    with pytest.raises(AuthError, match=message):
        TokenVerifier(SECRET).user_id(header)


def test_tokens_without_exp_or_sub_are_refused():
    verifier = TokenVerifier(SECRET)
    with pytest.raises(AuthError, match="exp"):
        verifier.user_id(bearer(jwt.encode({"sub": "a"}, SECRET, algorithm="HS256")))
    with pytest.raises(AuthError, match="sub"):
        verifier.user_id(bearer(jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")))


def test_a_cached_token_is_not_trusted_past_its_expiry():
    verifier = TokenVerifier(SECRET)
    expires = int(time.time()) + 1
    token = jwt.encode({"sub": "bob", "exp": expires}, SECRET, algorithm="HS256")
    assert verifier.user_id(bearer(token)) == "bob"
    assert token in verifier._subjects
    wait_until(lambda: time.time() > expires + 0.01, timeout=5, message="the token's exp to pass")
    with pytest.raises(AuthError, match="expired"):
        verifier.user_id(bearer(token))


def test_the_cache_stays_bounded():
    verifier = TokenVerifier(SECRET, cache_size=3)
    for n in range(10):
        verifier.user_id(bearer(mint_token(SECRET, f"u{n}", 60)))
    assert len(verifier._subjects) <= 3
