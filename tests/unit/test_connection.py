"""Reading the connection settings, and the node pool's choice of node."""

import base64

import pytest

from event_collector.exceptions import ConfigError
from event_collector.settings import load_settings
from event_collector.shipper.connection import Node, connection_from_settings, parse_nodes, redact
from event_collector.shipper.nodes import NodePool


def settings(**values):
    return load_settings({key.upper(): str(value) for key, value in values.items()}, env_file=None)


def test_several_nodes_with_their_own_user_info_or_the_settings_credentials():
    connection = connection_from_settings(settings(
        open_search_dns=" https://a%40b:p%3Ass@one:9200/prefix/ , https://two:9201,",
        open_search_username="operator", open_search_password="secret"))
    one, two = connection.nodes
    assert one.base == "https://one:9200/prefix" and two.base == "https://two:9201"
    assert one.authorization == "Basic " + base64.b64encode(b"a@b:p:ss").decode()
    assert two.authorization == "Basic " + base64.b64encode(b"operator:secret").decode()
    assert "secret" not in repr(connection)
    assert connection.ssl_context is not None and connection.warnings == []


def test_plain_http_with_credentials_warns_and_verify_off_warns():
    assert "plain http" in connection_from_settings(settings(open_search_dns="http://u:p@one:9200")).warnings[0]
    warnings = connection_from_settings(settings(open_search_dns="https://one", open_search_verify_certs="false")).warnings
    assert "OPEN_SEARCH_VERIFY_CERTS=false" in warnings[0]


@pytest.mark.parametrize("dns, expected", [
    ("", "OPEN_SEARCH_DNS is empty"),
    ("user:hunter2@host:9200", "not an http:// or https:// URL"),
    ("ftp://u:hunter2@host", "not an http:// or https:// URL"),
    ("http://u:hunter2@host:99999", "invalid port"),
    ("http://u:hunter2@host:9200/?pretty", "query or fragment"),
    ("http://one:9200,http://one:9200/", "same node twice"),
])
def test_a_bad_node_list_is_refused_without_showing_the_password(dns, expected):
    with pytest.raises(ConfigError, match=expected) as raised:
        parse_nodes(dns)
    assert "hunter2" not in str(raised.value)


def test_redact_drops_user_info_up_to_its_last_at_sign():
    assert redact("https://u:p@ss@host:9200/x@y") == "https://***@host:9200/x@y"
    assert redact("u:pass@host") == "***@host"
    assert redact("http://host:9200") == "http://host:9200"


@pytest.mark.parametrize("values, expected", [
    ({"open_search_password": "hunter2"}, "OPEN_SEARCH_USERNAME is not"),
    ({"open_search_auth": "sigv4", "open_search_username": "u", "open_search_password": "hunter2"},
     "leave OPEN_SEARCH_USERNAME"),
    ({"open_search_dns": "https://one", "open_search_ca_certs": "/nonexistent.pem"}, "OPEN_SEARCH_CA_CERTS"),
    ({"open_search_dns": "https://one", "open_search_client_key": "/k.pem"}, "OPEN_SEARCH_CLIENT_CERT is not"),
    ({"open_search_dns": "https://one", "open_search_client_cert": "/nonexistent.pem"}, "OPEN_SEARCH_CLIENT_CERT"),
])
def test_inconsistent_settings_stop_start_up_naming_the_variable(values, expected):
    with pytest.raises(ConfigError, match=expected) as raised:
        connection_from_settings(settings(**values))
    assert "hunter2" not in str(raised.value)


def test_sigv4_needs_a_region_and_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION",
                 "AWS_REGION", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="AWS_REGION"):
        connection_from_settings(settings(open_search_auth="sigv4"))
    with pytest.raises(ConfigError, match="no AWS credentials"):
        connection_from_settings(settings(open_search_auth="sigv4", aws_region="eu-west-1"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    signer = connection_from_settings(settings(open_search_auth="sigv4", aws_region="eu-west-1",
                                               open_search_aws_service="aoss")).signer
    assert (signer.region, signer.service) == ("eu-west-1", "aoss")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def nodes(count):
    return [Node(f"http://n{i}:9200") for i in range(count)]


def test_requests_go_round_robin_and_a_failed_node_is_left_out_until_its_back_off_ends():
    clock = Clock()
    one, two, three = nodes(3)
    pool = NodePool([one, two, three], base_seconds=1.0, max_seconds=60.0, clock=clock)
    assert [next(pool.candidates()) for _ in range(4)] == [one, two, three, one]
    pool.set_aside(two, "refused", request_started=clock.now)
    assert list(pool.candidates()) == [three, one]  # two is skipped, the rest are tried in turn
    assert pool.live() == [one, three]
    clock.now += 1.0  # the first back-off is at most base_seconds
    assert pool.live() == [one, two, three]


def test_concurrent_failures_of_one_node_lengthen_its_back_off_once():
    clock = Clock()
    one, two = nodes(2)
    pool = NodePool([one, two], base_seconds=1.0, max_seconds=60.0, clock=clock)
    sent_at = clock.now
    clock.now += 0.01
    for _ in range(10):  # ten senders had requests in flight when the node died
        pool.set_aside(one, "reset", request_started=sent_at)
    clock.now += 1.0
    assert one in pool.live()


def test_when_every_node_is_set_aside_the_one_back_first_is_still_tried_and_an_answer_revives_it(monkeypatch):
    monkeypatch.setattr("event_collector.retry.random.uniform", lambda low, high: high)  # no jitter
    clock = Clock()
    one, two = nodes(2)
    pool = NodePool([one, two], base_seconds=1.0, max_seconds=1.0, clock=clock)
    pool.set_aside(one, "refused", request_started=clock.now)
    clock.now += 0.001
    pool.set_aside(two, "refused", request_started=clock.now)
    assert pool.live() == []
    assert list(pool.candidates()) == [one]
    pool.answered(one)
    assert pool.live() == [one]
