"""The indexer's librdkafka settings: offsets move only by its explicit commit, and dead letters are written
as durably as the events were."""

from event_collector.kafka.dead_letter_writer import producer_config
from event_collector.kafka.membership import consumer_config
from event_collector.settings import load_settings


def settings(**environ):
    return load_settings({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "SERVER_ENVIRONMENT": "prod", **environ},
                         env_file=None)


def test_the_consumer_commits_only_explicitly_and_starts_from_the_earliest_record():
    config = consumer_config(settings())
    assert config["group.id"] == "event-collector-prod"
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert config["bootstrap.servers"] == "127.0.0.1:9092"


def test_the_group_is_kafka_group_id_when_set():
    assert consumer_config(settings(KAFKA_GROUP_ID="indexers"))["group.id"] == "indexers"


def test_dead_letters_are_produced_idempotently_to_all_in_sync_replicas():
    config = producer_config(settings())
    assert config["enable.idempotence"] is True and config["acks"] == "all"


def test_a_dead_letter_is_reported_within_the_produce_timeout_and_may_be_as_large_as_an_event():
    config = producer_config(settings(KAFKA_PRODUCE_TIMEOUT_SECONDS="7", MAX_BODY_BYTES=str(4 * 1024 * 1024)))
    # Not librdkafka's 300 s: a letter the brokers do not take is reported, logged and produced again.
    assert config["message.timeout.ms"] == 7000
    assert config["message.max.bytes"] > 4 * 1024 * 1024
