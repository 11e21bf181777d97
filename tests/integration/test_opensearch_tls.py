"""TLS and credentials against real endpoints: Debian's nginx with a private CA made in the test, basic auth and
mutual TLS, in front of the real OpenSearch node.

Nothing the collector process writes (its output, /metrics, its store's reasons) may hold a password."""

import base64
import sqlite3
import uuid

import pytest

from certificates import CertificateAuthority
from support import Nginx, assert_delivered_exactly_once, event, free_port, journal_events, metric, wait_until


@pytest.fixture
def nginx(tmp_path):
    (tmp_path / "nginx").mkdir()
    proxy = Nginx(tmp_path / "nginx")
    yield proxy
    proxy.stop()


@pytest.fixture
def ca(tmp_path):
    return CertificateAuthority(tmp_path, "private")


@pytest.fixture
def server_certificate(ca):
    issued = ca.issue("nginx", server=True)
    return issued.certificate, issued.key


def send(collector, count: int) -> list[str]:
    events = [event() for _ in range(count)]
    assert {collector.post_event(e).status_code for e in events} == {200}
    return [e["log_id"] for e in events]


def written(collector, metrics_page: str) -> str:
    """Everything the collector process wrote: its stdout and stderr, a /metrics page, its store's reasons."""
    with sqlite3.connect(collector.database) as connection:
        reasons = [r for (r,) in connection.execute("SELECT reason FROM dead_letter")]
        reasons += [r or "" for (r,) in connection.execute("SELECT last_error FROM pending")]
    return "\n".join([collector.log(), metrics_page, *reasons])


def assert_no_secret(text: str, password: str) -> None:
    assert password not in text
    assert base64.b64encode(f"operator:{password}".encode()).decode() not in text  # the Authorization header


def attempts(collector) -> set[int]:
    """The attempt counts of the stored events; an event in flight (in the journal) was never tried: 0."""
    with sqlite3.connect(collector.database) as connection:
        counts = {n for (n,) in connection.execute("SELECT DISTINCT attempts FROM pending")}
    return counts | ({0} if journal_events(collector.database) else set())


def test_the_right_ca_and_password_deliver_exactly_once_and_no_password_is_written(
        collector_factory, opensearch, nginx, ca, server_certificate):
    password = "pw-" + uuid.uuid4().hex
    nginx.start(tls=server_certificate, require_password=True, password=password)
    collector = collector_factory(OPEN_SEARCH_DNS=nginx.url, OPEN_SEARCH_CA_CERTS=ca.bundle,
                                  OPEN_SEARCH_USERNAME="operator", OPEN_SEARCH_PASSWORD=password)
    log_ids = send(collector, 50)
    assert_delivered_exactly_once("TLS (private CA) and basic auth", log_ids, opensearch, collector.environment,
                                  fault="none", ack_mode="durable",
                                  settings=collector.report_settings("OPEN_SEARCH_CA_CERTS"))
    metrics_page = collector.http.get("/metrics").text
    collector.stop()
    assert collector.dead_letters() == []
    assert_no_secret(written(collector, metrics_page), password)


def test_a_wrong_ca_delivers_nothing_keeps_the_events_and_says_certificate(collector_factory, opensearch, nginx,
                                                                           server_certificate, tmp_path):
    stranger = CertificateAuthority(tmp_path, "stranger")
    nginx.start(tls=server_certificate)
    collector = collector_factory(OPEN_SEARCH_DNS=nginx.url, OPEN_SEARCH_CA_CERTS=stranger.bundle)
    send(collector, 20)
    wait_until(lambda: metric(collector, "event_collector_delivery_paused") == 1, timeout=60,
               message="delivery paused")
    errors = [line for line in collector.log().splitlines() if "ERROR" in line]
    assert any("certificate" in line and "OPEN_SEARCH_CA_CERTS" in line for line in errors), errors
    assert opensearch.count(collector.environment) == 0
    assert collector.pending_rows() == 20
    assert collector.dead_letters() == []
    assert attempts(collector) == {0}


def test_a_wrong_password_pauses_without_dead_letters_then_a_restart_with_the_right_one_delivers_once(
        collector_factory, opensearch, nginx, ca, server_certificate):
    right, wrong = "pw-" + uuid.uuid4().hex, "pw-" + uuid.uuid4().hex
    nginx.start(tls=server_certificate, require_password=True, password=right)
    # Two nodes, the first down: the set-aside node must not hide the 401 of the one that answers. Both carry the
    # password in their URL, so that the dead one's log lines and metric label would show it if they could.
    dead_port = free_port()
    dead_node = f"https://127.0.0.1:{dead_port}"
    collector = collector_factory(OPEN_SEARCH_DNS=f"https://operator:{wrong}@127.0.0.1:{dead_port},"
                                                  f"https://operator:{wrong}@127.0.0.1:{nginx.port}",
                                  OPEN_SEARCH_CA_CERTS=ca.bundle, MAX_DELIVERY_ATTEMPTS=2, BULK_SIZE=10)
    log_ids = send(collector, 30)
    wait_until(lambda: metric(collector, "event_collector_delivery_pauses_total") >= 3, timeout=90,
               message="several requests answered 401")
    assert "(401): check OPEN_SEARCH_USERNAME and OPEN_SEARCH_PASSWORD" in collector.log()
    assert metric(collector, "event_collector_delivery_paused") == 1
    assert collector.dead_letters() == []
    assert attempts(collector) == {0}
    assert opensearch.count(collector.environment) == 0
    assert metric(collector, "event_collector_opensearch_node_failures_total", node=dead_node) >= 1
    metrics_page = collector.http.get("/metrics").text
    assert collector.stop() == 0
    assert_no_secret(written(collector, metrics_page), wrong)

    fixed = collector_factory(OPEN_SEARCH_DNS=f"https://operator:{right}@127.0.0.1:{dead_port},{nginx.url}",
                              OPEN_SEARCH_CA_CERTS=ca.bundle,
                              OPEN_SEARCH_USERNAME="operator", OPEN_SEARCH_PASSWORD=right,
                              DATABASE=collector.database, SERVER_ENVIRONMENT=collector.environment)
    assert_delivered_exactly_once("wrong password, then fixed and restarted", log_ids, opensearch,
                                  collector.environment, fault="opensearch_misconfigured", ack_mode="durable",
                                  settings=fixed.report_settings())
    wait_until(lambda: fixed.pending_rows() == 0, timeout=30, message="the store emptied")
    metrics_page = fixed.http.get("/metrics").text
    fixed.stop()
    assert fixed.dead_letters() == []
    for password in (right, wrong):
        assert_no_secret(written(fixed, metrics_page), password)


def test_mutual_tls_delivers_with_the_client_certificate_and_nothing_without(collector_factory, opensearch, nginx,
                                                                             ca, server_certificate):
    client = ca.issue("collector", server=False)
    nginx.start(tls=server_certificate, client_ca=ca.bundle)
    with_certificate = collector_factory(OPEN_SEARCH_DNS=nginx.url, OPEN_SEARCH_CA_CERTS=ca.bundle,
                                         OPEN_SEARCH_CLIENT_CERT=client.certificate, OPEN_SEARCH_CLIENT_KEY=client.key)
    log_ids = send(with_certificate, 20)
    assert_delivered_exactly_once("mutual TLS with a client certificate", log_ids, opensearch,
                                  with_certificate.environment, fault="none", ack_mode="durable",
                                  settings=with_certificate.report_settings("OPEN_SEARCH_CLIENT_CERT"))

    without = collector_factory(OPEN_SEARCH_DNS=nginx.url, OPEN_SEARCH_CA_CERTS=ca.bundle)
    send(without, 20)
    # nginx completes the handshake and answers 400 (HTML, not OpenSearch's JSON) to a request without a
    # certificate: delivery pauses, naming the setting, and no attempt is burnt.
    wait_until(lambda: metric(without, "event_collector_delivery_pauses_total") >= 2, timeout=60,
               message="nginx refusing the requests without a client certificate")
    assert "OPEN_SEARCH_CLIENT_CERT" in without.log()
    assert metric(without, "event_collector_delivery_paused") == 1
    assert opensearch.count(without.environment) == 0
    assert without.pending_rows() == 20
    assert attempts(without) == {0}


def test_verify_certs_false_delivers_and_warns_at_every_start(collector_factory, opensearch, nginx,
                                                             server_certificate):
    nginx.start(tls=server_certificate)  # signed by a CA the collector is not told about
    collector = collector_factory(OPEN_SEARCH_DNS=nginx.url, OPEN_SEARCH_VERIFY_CERTS="false")
    log_ids = send(collector, 10)
    assert_delivered_exactly_once("OPEN_SEARCH_VERIFY_CERTS=false", log_ids, opensearch, collector.environment,
                                  fault="none", ack_mode="durable",
                                  settings=collector.report_settings("OPEN_SEARCH_VERIFY_CERTS"))
    collector.stop()
    assert collector.log().count("OPEN_SEARCH_VERIFY_CERTS=false") == 1
    collector.start()
    wait_until(lambda: collector.log().count("OPEN_SEARCH_VERIFY_CERTS=false") == 2, timeout=30,
               message="the warning again at the second start")
