"""A real browser (Debian's headless Chromium, driven by its chromedriver) sends events from a page of another
origin: a preflighted `fetch` with a Bearer token and device headers, and `navigator.sendBeacon` on
`pagehide`; a page of an origin not allowed cannot send. Asserted in OpenSearch."""

import json
import shutil
import uuid

import pytest

from support import Site, metric, wait_until

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

SENDER = """<!doctype html><title>sender</title><script>
const config = %(config)s;
window.results = [];
fetch(config.collector + "/events", {
  method: "POST",
  headers: {"Authorization": "Bearer " + config.token, "Content-Type": "application/json",
            "device-uuid": "fetch-device", "app-version": "web-1.0", "os-version": "web"},
  body: JSON.stringify({log_id: config.ids.fetch, page: "/shop", event: "view"}),
}).then(async answer => window.results.push("fetch:" + answer.status + ":" + (await answer.text())),
        error => window.results.push("fetch-rejected:" + error.name));
addEventListener("pagehide", () => {
  // A string is sent as text/plain: a CORS-simple request, no preflight.
  navigator.sendBeacon(config.collector + "/events/beacon?token=" + config.token,
      JSON.stringify({log_id: config.ids.beacon_query, page: "/shop", event: "leave", device_uuid: "beacon-device"}));
  navigator.sendBeacon(config.collector + "/events/beacon",
      JSON.stringify({log_id: config.ids.beacon_body, page: "/shop", event: "leave", token: config.token,
                      app_version: "web-1.0", param: {"seconds_on_page": 12}}));
});
</script>"""

NEXT = "<!doctype html><title>next</title><p>left the shop</p>"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Failed, not skipped: a browser test that silently does not run proves nothing.
    assert CHROMIUM and CHROMEDRIVER, "needs Debian's chromium and chromium-driver (make test installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: tests run as root, where Chromium's sandbox refuses to start.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    # The driver's path given: selenium does not look for (or download) one of its own.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def pages():
    allowed, other = Site(), Site()
    yield allowed, other
    allowed.close()
    other.close()


def sender_page(collector_url: str, token: str, ids: dict[str, str]) -> str:
    return SENDER % {"config": json.dumps({"collector": collector_url, "token": token, "ids": ids})}


def results(driver) -> list[str]:
    return driver.execute_script("return window.results || []")


def test_a_page_of_an_allowed_origin_sends_with_fetch_and_with_beacons_on_pagehide(
        browser, pages, collector_factory, opensearch):
    allowed, _ = pages
    collector = collector_factory(CORS_ALLOWED_ORIGINS=allowed.origin, ACCESS_LOG="true",
                                  LOG_FORMAT="text")  # the access lines below are read as text
    token = collector.token("browser-user")
    ids = {name: f"{name}-{uuid.uuid4().hex}" for name in ("fetch", "beacon_query", "beacon_body")}
    allowed.page("/shop", sender_page(collector.url, token, ids))
    allowed.page("/next", NEXT)

    browser.get(allowed.origin + "/shop")
    # The fetch was preflighted (it sends Authorization) and the page could read the answer.
    assert wait_until(lambda: results(browser), timeout=20, message="the page's fetch to settle") == [
        'fetch:200:{"status":"created"}']
    browser.get(allowed.origin + "/next")  # pagehide: the beacons go

    wait_until(lambda: set(ids.values()) <= set(opensearch.log_id_counts(collector.environment)), timeout=30,
               message="the fetched and beaconed events to be indexed")
    counts = opensearch.log_id_counts(collector.environment)
    assert {log_id: counts[log_id] for log_id in ids.values()} == {log_id: 1 for log_id in ids.values()}
    documents = {hit["_source"]["log_id"]: hit["_source"]
                 for hit in opensearch.search(collector.environment, {"match_all": {}})}
    fetched = documents[ids["fetch"]]
    assert (fetched["user_id"], fetched["device_uuid"], fetched["app_version"], fetched["os_version"]) == (
        "browser-user", "fetch-device", "web-1.0", "web")
    assert "Chrome" in fetched["user_agent"]
    by_query, by_body = documents[ids["beacon_query"]], documents[ids["beacon_body"]]
    assert (by_query["user_id"], by_query["device_uuid"], by_query["event_info"]["event"]) == (
        "browser-user", "beacon-device", "leave")
    assert (by_body["user_id"], by_body["app_version"], by_body["event_info"]["param"]) == (
        "browser-user", "web-1.0", {"seconds_on_page": 12})
    assert token not in json.dumps(documents)

    # The browser's requests as the collector saw them: a preflight, then the POSTs; no token in any line.
    log = collector.log()
    assert '"OPTIONS /events HTTP/1.1" 204' in log
    assert log.count('"POST /events/beacon?[redacted] HTTP/1.1" 204') == 1
    assert log.count('"POST /events/beacon HTTP/1.1" 204') == 1
    assert token not in log


def test_a_page_of_another_origin_cannot_send(browser, pages, collector_factory, opensearch):
    allowed, other = pages
    collector = collector_factory(CORS_ALLOWED_ORIGINS=allowed.origin)
    log_id = f"refused-{uuid.uuid4().hex}"
    other.page("/shop", sender_page(collector.url, collector.token(), {
        "fetch": log_id, "beacon_query": "unused-1", "beacon_body": "unused-2"}))

    browser.get(other.origin + "/shop")
    # The preflight got no CORS headers: the browser never sent the POST and the page saw a network error.
    assert wait_until(lambda: results(browser), timeout=20, message="the page's fetch to settle") == [
        "fetch-rejected:TypeError"]
    assert metric(collector, "event_collector_events_received_total", outcome="created") == 0
    assert metric(collector, "event_collector_events_received_total", outcome="pending") == 0
    assert opensearch.count(collector.environment) == 0
