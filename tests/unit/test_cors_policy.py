import asyncio

import pytest

from event_collector.api.app import CollectorApp
from event_collector.api.cors import CorsPolicy
from event_collector.exceptions import ConfigError
from event_collector.settings import Settings, load_settings


def test_origins_are_matched_exactly_after_lowercasing_the_setting():
    policy = CorsPolicy(" https://Shop.Example.com ,http://127.0.0.1:8080")
    assert policy.allowed_origin([(b"origin", b"https://shop.example.com")]) == b"https://shop.example.com"
    assert policy.allowed_origin([(b"origin", b"http://127.0.0.1:8080")]) == b"http://127.0.0.1:8080"
    for origin in (b"https://shop.example.com:443", b"http://shop.example.com", b"https://shop.example.com.evil",
                   b"null", b"*"):
        assert policy.allowed_origin([(b"origin", origin)]) is None
    assert policy.allowed_origin([]) is None
    assert CorsPolicy("*").allowed_origin([(b"origin", b"null")]) == b"null"
    assert CorsPolicy.from_setting("  ") is None


@pytest.mark.parametrize("value", ["https://a.com/", "a.com", "https://a.com/path", "https://a.com,,https://b.com",
                                   "https://*.a.com"])
def test_origins_that_could_never_match_stop_start_up(value):
    with pytest.raises(ConfigError, match="^CORS_ALLOWED_ORIGINS="):
        load_settings({"CORS_ALLOWED_ORIGINS": value}, env_file=None)


class ShuttingDown:
    accepting = False


def call(app, method: str, headers: list) -> list[dict]:
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": method, "path": "/events", "raw_path": b"/events", "headers": headers,
             "query_string": b""}
    asyncio.run(app(scope, receive, send))
    return sent


def test_a_503_carries_the_allowed_origin_and_only_to_that_origin():
    settings = Settings(jwt_secret="s" * 32, cors_allowed_origins="https://a.com")
    app = CollectorApp(settings, collector=ShuttingDown())
    start = call(app, "POST", [(b"origin", b"https://a.com")])[0]
    assert start["status"] == 503
    assert (b"access-control-allow-origin", b"https://a.com") in start["headers"]
    assert (b"retry-after", b"5") in start["headers"]
    other = call(app, "POST", [(b"origin", b"https://b.com")])[0]
    assert not [name for name, _ in other["headers"] if name.startswith(b"access-control-")]
