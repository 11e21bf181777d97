import base64
import hashlib
import hmac
import json
import sys
import time

import jwt
import pytest
from hypothesis import given, settings, strategies as st

from event_collector.api.auth import MAX_SUBJECT_CHARS, MAX_TOKEN_BYTES, TokenVerifier, mint_token
from event_collector.exceptions import AuthError

SECRET = "s" * 40
NOW = 1_800_000_000.0
YEAR = 365 * 24 * 3600


def bearer(token: str) -> bytes:
    return f"Bearer {token}".encode()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(claims: dict | bytes, header: dict | bytes | None = None) -> str:
    """An HS256 token over exactly these claim bytes, signed with SECRET: a token only the secret's
    holder could make, whatever odd JSON it carries."""
    def raw(part):
        return part if isinstance(part, bytes) else json.dumps(part, ensure_ascii=False).encode()

    signing_input = f"{b64url(raw(header or {'alg': 'HS256', 'typ': 'JWT'}))}.{b64url(raw(claims))}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def verifier(**options) -> TokenVerifier:
    return TokenVerifier(SECRET, clock=Clock(), **options)


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
    with pytest.raises(AuthError, match="exp"):
        verifier().user_id(bearer(signed({"sub": "a"})))
    with pytest.raises(AuthError, match="sub"):
        verifier().user_id(bearer(signed({"exp": NOW + 60})))


def test_a_cached_token_is_not_trusted_past_its_expiry():
    clock = Clock()
    verifier = TokenVerifier(SECRET, clock=clock)
    token = signed({"sub": "bob", "exp": NOW + 60})
    assert verifier.user_id(bearer(token)) == "bob"
    assert bearer(token) in verifier._subjects
    clock.now = NOW + 59.9
    assert verifier.user_id(bearer(token)) == "bob"
    clock.now = NOW + 60
    with pytest.raises(AuthError, match="expired"):
        verifier.user_id(bearer(token))


def test_an_expired_token_is_refused_from_the_cache_whatever_the_spelling_of_its_scheme():
    clock = Clock()
    verifier = TokenVerifier(SECRET, clock=clock)
    token = signed({"sub": "bob", "exp": NOW + 60})
    # Cached under the usual spelling; looked up under it from another one.
    assert verifier.user_id(b"bearer  " + token.encode() + b" ") == "bob"
    assert list(verifier._subjects) == [bearer(token)]
    clock.now = NOW + 61
    for header in (bearer(token), b"BEARER " + token.encode()):
        with pytest.raises(AuthError, match="expired"):
            verifier.user_id(header)


def test_cached_tokens_are_not_confused_with_one_another():
    verifier = TokenVerifier(SECRET, clock=Clock())
    alice, bob = signed({"sub": "alice", "exp": NOW + 60}), signed({"sub": "bob", "exp": NOW + 60})
    forged = alice[:-2] + ("AA" if not alice.endswith("AA") else "BA")
    for _ in range(2):
        assert verifier.user_id(bearer(alice)) == "alice"
        assert verifier.user_id(bearer(bob)) == "bob"
        # A token that differs from a cached one only in its signature is verified, and refused.
        with pytest.raises(AuthError, match="invalid token"):
            verifier.user_id(bearer(forged))
    assert sorted(verifier._subjects) == sorted([bearer(alice), bearer(bob)])


def test_the_cache_stays_bounded_in_entries():
    verifier = TokenVerifier(SECRET, cache_size=3)
    for n in range(10):
        verifier.user_id(bearer(mint_token(SECRET, f"u{n}", 60)))
    assert len(verifier._subjects) <= 3


def test_the_cache_stays_bounded_in_bytes():
    verifier = TokenVerifier(SECRET, clock=Clock(), cache_bytes=64 * 1024)
    # Valid tokens near MAX_TOKEN_BYTES: ~9 KB each with their subject, so 64 KiB holds about 7.
    tokens = [signed({"sub": f"u{n}-" + "x" * 1000, "exp": NOW + 60, "pad": "p" * 5000}) for n in range(40)]
    for token in tokens:
        assert verifier.user_id(bearer(token)).startswith("u")
        held = sum(sys.getsizeof(t) + sys.getsizeof(s) for t, (s, _) in verifier._subjects.items())
        assert held <= 64 * 1024
    assert 1 <= len(verifier._subjects) < 10
    # Whatever was dropped is simply verified again.
    assert verifier.user_id(bearer(tokens[0])) == "u0-" + "x" * 1000


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def junk_variants(token: str) -> list[str]:
    """Spellings of one valid token that PyJWT's lenient base64 decoding reads as the same bytes."""
    header, payload, signature = token.split(".")
    # 32 signature bytes are 43 characters: the last one carries 2 unused bits; set them.
    last = _ALPHABET.index(signature[-1])
    same_bits = _ALPHABET[last | 0b11 if last & 0b11 != 0b11 else last & ~0b11]
    return [
        token + "!!!!",
        token + "=",
        token + "====",
        f"{header}.{payload}.{signature[:10]}!{signature[10:]}",
        f"{header}.{payload}=.{signature}",
        f"{header}!.{payload}.{signature}",
        f"{header}.{payload}.{signature[:-1]}{same_bits}",
        token + "\x00",
        token + ".",
        token + "!" * 100_000,
    ]


def test_junk_spellings_of_a_valid_token_are_refused_and_never_cached():
    verifier_ = verifier()
    token = signed({"sub": "alice", "exp": NOW + 3600})
    assert verifier_.user_id(bearer(token)) == "alice"
    for variant in junk_variants(token):
        with pytest.raises(AuthError, match="invalid token"):
            verifier_.user_id(bearer(variant))
    assert list(verifier_._subjects) == [bearer(token)]


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), junk=st.text(min_size=1, max_size=20))
def test_no_edit_of_a_valid_token_gives_another_accepted_spelling(position, junk):
    verifier_ = verifier()
    token = signed({"sub": "alice", "exp": NOW + 3600})
    verifier_.user_id(bearer(token))
    at = position % (len(token) + 1)
    edited = token[:at] + junk + token[at:]
    try:
        verifier_.user_id(bearer(edited))
    except AuthError:
        pass
    # Accepted or not, only one spelling of the token is ever in the cache.
    assert len(verifier_._subjects) == 1


def test_a_token_over_the_size_limit_is_refused_even_when_validly_signed():
    def sized(pad: int) -> str:
        return signed({"sub": "alice", "exp": NOW + 60, "pad": "p" * pad})

    fits = next(sized(pad) for pad in range(6000, 0, -1) if len(sized(pad)) <= MAX_TOKEN_BYTES)
    assert verifier().user_id(bearer(fits)) == "alice"
    too_long = sized(7000)
    assert len(too_long) > MAX_TOKEN_BYTES
    with pytest.raises(AuthError, match="longer than"):
        verifier().user_id(bearer(too_long))


ODD_CLAIMS = {
    "exp Infinity": b'{"sub": "a", "exp": Infinity}',
    "exp -Infinity": b'{"sub": "a", "exp": -Infinity}',
    "exp NaN": b'{"sub": "a", "exp": NaN}',
    "exp 1e400": b'{"sub": "a", "exp": 1e400}',
    "exp 401 digits": b'{"sub": "a", "exp": 1' + b"0" * 400 + b"}",
    "exp 5000 digits": b'{"sub": "a", "exp": 1' + b"0" * 5000 + b"}",
    "exp list": b'{"sub": "a", "exp": [1]}',
    "exp object": b'{"sub": "a", "exp": {}}',
    "exp string": b'{"sub": "a", "exp": "1900000000"}',
    "exp true": b'{"sub": "a", "exp": true}',
    "exp null": b'{"sub": "a", "exp": null}',
    "exp 11 years ahead": json.dumps({"sub": "a", "exp": NOW + 11 * YEAR}).encode(),
    "exp in milliseconds": json.dumps({"sub": "a", "exp": (NOW + 60) * 1000}).encode(),
    "iat string": json.dumps({"sub": "a", "exp": NOW + 60, "iat": "x"}).encode(),
    "iat list": json.dumps({"sub": "a", "exp": NOW + 60, "iat": [1]}).encode(),
    "iat 1e400": b'{"sub": "a", "exp": 1900000000, "iat": 1e400}',
    "nbf object": json.dumps({"sub": "a", "exp": NOW + 60, "nbf": {}}).encode(),
    "nbf string": json.dumps({"sub": "a", "exp": NOW + 60, "nbf": "0"}).encode(),
    "nbf Infinity": b'{"sub": "a", "exp": 1900000000, "nbf": -Infinity}',
    "sub empty": json.dumps({"sub": "", "exp": NOW + 60}).encode(),
    "sub too long": json.dumps({"sub": "x" * (MAX_SUBJECT_CHARS + 1), "exp": NOW + 60}).encode(),
    "sub 2000 chars": json.dumps({"sub": "x" * 2000, "exp": NOW + 60}).encode(),
    "sub number": json.dumps({"sub": 42, "exp": NOW + 60}).encode(),
    "claims a list": b'["sub", "exp"]',
    "claims not JSON": b"\xff\xfe",
}


@pytest.mark.parametrize("claims", ODD_CLAIMS.values(), ids=ODD_CLAIMS.keys())
def test_validly_signed_tokens_with_odd_claims_are_refused(claims):
    with pytest.raises(AuthError, match="invalid token|expired"):
        verifier().user_id(bearer(signed(claims)))


ODD_HEADERS = {
    "nested 6000 deep": b"[" * 6000 + b"]" * 6000,
    "alg none": json.dumps({"alg": "none"}).encode(),
    "alg HS512": json.dumps({"alg": "HS512"}).encode(),
    "no alg": b"{}",
    "not an object": b"[1]",
    "b64 false": json.dumps({"alg": "HS256", "b64": False, "crit": ["b64"]}).encode(),
    "alg a list": json.dumps({"alg": ["HS256"]}).encode(),
}


@pytest.mark.parametrize("header", ODD_HEADERS.values(), ids=ODD_HEADERS.keys())
def test_tokens_with_odd_headers_are_refused(header):
    with pytest.raises(AuthError, match="invalid token"):
        verifier().user_id(bearer(signed({"sub": "a", "exp": NOW + 60}, header)))


@pytest.mark.parametrize("claims", [
    {"sub": "a", "exp": NOW + 60},
    {"sub": "a", "exp": NOW + 60.5, "iat": NOW - 0.5, "nbf": NOW},
    {"sub": "a", "exp": int(NOW) + 9 * YEAR, "iat": int(NOW)},
    {"sub": "x" * MAX_SUBJECT_CHARS, "exp": NOW + 60},
    {"sub": "갤" * MAX_SUBJECT_CHARS, "exp": NOW + 60},
    {"sub": "a", "exp": NOW + 60, "aud": "", "jti": "j", "iss": "anyone", "extra": {"nested": [1]}},
])
def test_the_accepted_claim_shapes(claims):
    assert verifier().user_id(bearer(signed(claims))) == claims["sub"]


@pytest.mark.parametrize(("claims", "message"), [
    ({"sub": "a", "exp": NOW}, "expired"),
    ({"sub": "a", "exp": NOW + 60, "nbf": NOW + 1}, "not valid yet"),
    ({"sub": "a", "exp": NOW + 60, "iat": NOW + 1}, "not valid yet"),
    ({"sub": "a", "exp": NOW + 60, "aud": "another-service"}, "audience"),
])
def test_time_and_audience_rules_are_kept(claims, message):
    with pytest.raises(AuthError, match=message):
        verifier().user_id(bearer(signed(claims)))


def test_a_token_signed_with_another_secret_is_refused():
    token = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, "o" * 40, algorithm="HS256")
    with pytest.raises(AuthError, match="Signature verification failed"):
        TokenVerifier(SECRET).user_id(bearer(token))
