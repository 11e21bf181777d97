"""The indexer's librdkafka settings: offsets move only by its explicit commit, and dead letters are written
as durably as the events were."""

from event_collector.kafka.indexer import consumer_config, producer_config
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
