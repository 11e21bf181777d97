"""The KAFKA_* settings and the librdkafka configuration built from them."""

import pytest

from event_collector.exceptions import ConfigError
from event_collector.kafka.config import connection_config
from event_collector.settings import load_settings


def settings(**values):
    return load_settings({"JWT_SECRET": "s", **values}, env_file=None)


def test_topic_dead_letter_topic_and_group_default_from_the_environment():
    s = settings(SERVER_ENVIRONMENT="prod")
    assert (s.kafka_topic_name, s.kafka_dead_letter_topic_name, s.kafka_group) == (
        "events_prod", "events_prod.dead-letter", "event-collector-prod")
    s = settings(KAFKA_TOPIC="clicks", KAFKA_GROUP_ID="idx")
    assert (s.kafka_topic_name, s.kafka_dead_letter_topic_name, s.kafka_group) == ("clicks", "clicks.dead-letter", "idx")


def test_kafka_ack_mode_needs_brokers_and_topic_names_follow_kafkas_rule():
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        settings(ACK_MODE="kafka")
    with pytest.raises(ConfigError, match="KAFKA_TOPIC"):
        settings(KAFKA_TOPIC="a topic")


def test_plaintext_config_lists_the_brokers():
    config = connection_config(settings(KAFKA_BOOTSTRAP_SERVERS=" 127.0.0.1:1 , 127.0.0.1:2,"))
    assert config["bootstrap.servers"] == "127.0.0.1:1,127.0.0.1:2"
    assert config["security.protocol"] == "plaintext"
    assert "sasl.username" not in config


def test_sasl_ssl_config_carries_credentials_and_files(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config = connection_config(settings(KAFKA_BOOTSTRAP_SERVERS="b:9093", KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                                        KAFKA_SASL_MECHANISM="scram-sha-512", KAFKA_SASL_USERNAME="u",
                                        KAFKA_SASL_PASSWORD="p", KAFKA_SSL_CA_LOCATION=str(ca)))
    assert config["security.protocol"] == "sasl_ssl"
    assert (config["sasl.mechanism"], config["sasl.username"], config["sasl.password"]) == ("SCRAM-SHA-512", "u", "p")
    assert config["ssl.ca.location"] == str(ca)


def test_settings_that_cannot_work_stop_start_up(tmp_path):
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME"):
        connection_config(settings(KAFKA_BOOTSTRAP_SERVERS="b:1", KAFKA_SECURITY_PROTOCOL="sasl_plaintext"))
    with pytest.raises(ConfigError, match="KAFKA_SSL_CA_LOCATION"):
        connection_config(settings(KAFKA_BOOTSTRAP_SERVERS="b:1", KAFKA_SECURITY_PROTOCOL="ssl",
                                   KAFKA_SSL_CA_LOCATION=str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        connection_config(settings())


def test_a_record_carries_everything_the_bulk_action_needs_and_comes_back_the_same():
    from event_collector.envelope import Envelope
    from event_collector.kafka.records import BadRecord, from_record, to_record

    envelope = Envelope(index="events_t_2026-11", log_id="id-1", document=b'{"log_id":"id-1"}',
                        received_at=1764300000.125, user_id="user-7")
    key, value, headers = to_record(envelope)
    assert key == b"user-7" and value == envelope.document
    assert from_record(key, value, headers) == envelope
    for broken in ([("index", b"i")], [("log_id", b"x"), ("index", b"")], [("index", b"i"), ("log_id", b"\xff")]):
        with pytest.raises(BadRecord):
            from_record(b"k", b"{}", broken)
    with pytest.raises(BadRecord):
        from_record(b"k", None, headers)


def test_a_record_value_is_one_json_line_and_one_that_is_not_a_json_object_is_not_an_event():
    from event_collector.kafka.records import BadRecord, from_record

    headers = [("index", b"events_t_2026-11"), ("log_id", b"id-1")]
    one_line = b'{"log_id": "id-1", "param": {"a": [1, 2]}}'
    assert from_record(b"u", one_line, headers).document == one_line  # kept byte for byte
    pretty = b'{\n  "log_id": "id-1",\n  "param": {\n    "a": [1, 2]\n  }\n}\n'
    assert from_record(b"u", pretty, headers).document == b'{"log_id":"id-1","param":{"a":[1,2]}}'
    for not_an_object in (b"hello", b'{"log_id": "id-1",\n oops}', b"[1, 2]", b'"text"', b'{"a": "\xff"}',
                          b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(BadRecord, match="not an event record: the value is"):
            from_record(b"u", not_an_object, headers)
