"""CORS on the ingest routes, against a real collector process (the browser's view: test_browser.py)."""

import pytest

from support import CollectorProcess, event

ALLOWED = "https://shop.example.com"
ROUTES = ["/events", "/events/batch", "/events/beacon"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    collector = CollectorProcess(tmp_path_factory.mktemp("cors"), CORS_ALLOWED_ORIGINS=f"{ALLOWED}, http://127.0.0.1:8080",
                                 RATE_LIMIT_PER_USER=1, RATE_LIMIT_BURST=1).start()
    yield collector
    collector.stop()


def preflight(collector, route: str, origin: str, **headers: str):
    return collector.http.options(route, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "authorization,content-type",
                                                  **headers})


@pytest.mark.parametrize("route", ROUTES)
def test_a_preflight_from_an_allowed_origin_gets_204_with_what_a_page_may_send(served, route):
    response = preflight(served, route, ALLOWED)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert response.headers["access-control-allow-methods"] == "POST"
    assert [h.strip() for h in response.headers["access-control-allow-headers"].split(",")] == [
        "authorization", "content-type", "content-encoding", "device-uuid", "app-version", "os-version",
        "x-retry-count"]
    assert response.headers["access-control-max-age"] == "7200"
    assert response.headers["vary"] == "origin"
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize("origin", ["https://evil.example.com", "https://shop.example.com.evil.com", "null",
                                    "http://shop.example.com"])
def test_a_preflight_from_another_origin_gets_403_without_cors_headers(served, origin):
    response = preflight(served, "/events", origin)
    assert response.status_code == 403
    assert not [name for name in response.headers if name.startswith("access-control-")]


def test_an_options_that_is_no_preflight_is_400(served):
    response = served.http.options("/events", headers={"Origin": ALLOWED})
    assert response.status_code == 400
    assert "preflight" in response.json()["error"]


def test_ingest_answers_carry_the_allowed_origin_errors_included(served):
    origin = {"Origin": ALLOWED}
    created = served.http.post("/events", json=event(), headers={**served.auth("cors-a"), **origin})
    assert (created.status_code, created.headers["access-control-allow-origin"]) == (200, ALLOWED)
    assert created.headers["access-control-expose-headers"] == "retry-after"
    unauthorized = served.http.post("/events", json=event(), headers=origin)
    invalid = served.http.post("/events", content=b"{", headers={**served.auth("cors-b"), **origin})
    limited = served.http.post("/events", json=event(), headers={**served.auth("cors-a"), **origin})
    wrong_method = served.http.get("/events/batch", headers=origin)
    beacon = served.http.post("/events/beacon", params={"token": served.token("cors-c")}, json=event(),
                              headers=origin)
    for response, status in ((unauthorized, 401), (invalid, 400), (limited, 429), (wrong_method, 405),
                             (beacon, 204)):
        assert response.status_code == status
        assert response.headers["access-control-allow-origin"] == ALLOWED, status
        assert response.headers["vary"] == "origin"
    assert wrong_method.headers["allow"] == "POST, OPTIONS"
    assert "retry-after" in limited.headers


def test_answers_to_other_origins_or_none_carry_no_cors_headers(served):
    for user, headers in (("cors-d", {"Origin": "https://evil.example.com"}), ("cors-e", {})):
        response = served.http.post("/events", json=event(), headers={**served.auth(user), **headers})
        assert response.status_code == 200
        assert not [name for name in response.headers if name.startswith("access-control-")]


def test_other_routes_are_untouched(served):
    assert served.http.options("/ping", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "GET"}
                               ).status_code == 405
    assert "access-control-allow-origin" not in served.http.get("/ping", headers={"Origin": ALLOWED}).headers


def test_any_origin_is_echoed_when_the_setting_is_a_star(collector_factory):
    collector = collector_factory(CORS_ALLOWED_ORIGINS="*")
    response = preflight(collector, "/events/beacon", "https://anyone.example.org")
    assert (response.status_code, response.headers["access-control-allow-origin"]) == (204, "https://anyone.example.org")


def test_with_cors_off_options_is_405_as_before_and_no_answer_carries_cors_headers(collector):
    response = preflight(collector, "/events", ALLOWED)
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    answered = collector.http.post("/events", json=event(), headers={**collector.auth(), "Origin": ALLOWED})
    assert answered.status_code == 200
    assert not [name for name in answered.headers if name.startswith("access-control-")]
