"""ACK_MODE=kafka against real brokers (scripts/kafka-dev, three of them, one cluster for the module): a 2xx
event is in the topic exactly once, keyed by its user, in a record the indexers turn into the SQLite path's
bulk action; Kafka down answers 503 with Retry-After and claims nothing; a broker killed under load loses
nothing answered 2xx."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import msgspec
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from event_collector.kafka.records import from_record
from event_collector.shipper.bulk import bulk_body, classify
from support import (OPENSEARCH_URL, CollectorProcess, KafkaCluster, Load, delivery_report, event, free_port, metric,
                     wait_until)

PARTITIONS = 3


@pytest.fixture
def kafka_collector(tmp_path: Path, kafka: KafkaCluster):
    """Start a kafka-mode collector whose topic exists (3 partitions, replication 3, min.insync.replicas 2)."""
    started: list[CollectorProcess] = []

    def start(**settings) -> CollectorProcess:
        collector = CollectorProcess(tmp_path, ACK_MODE="kafka", KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
                                     **settings)
        topic = f"events_{collector.environment}"
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3,
                                      config={"min.insync.replicas": "2"})])[topic].result(timeout=30)
        started.append(collector.start())
        return collector

    yield start
    for collector in started:
        if collector.process is not None and collector.process.poll() is None:
            collector.stop()


def read_topic(bootstrap: str, topic: str) -> list:
    """Every record of the topic, by offsets from the start to each partition's end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        records, positions = [], dict.fromkeys(ends, 0)

        def drained() -> bool:
            if all(positions[p] >= ends[p] for p in ends):
                return True
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    raise KafkaException(message.error())
                records.append(message)
                positions[message.partition()] = message.offset() + 1
            return all(positions[p] >= ends[p] for p in ends)

        wait_until(drained, timeout=60, interval=0, message="the topic to be read to its end")
        return records
    finally:
        consumer.close()


def log_ids(records: list) -> list[str]:
    return [from_record(r.key(), r.value(), r.headers()).log_id for r in records]


def test_kafka_unreachable_is_503_with_retry_after_and_unready(collector_factory) -> None:
    # Nothing listens on the bootstrap address: no broker ever acknowledges.
    collector = collector_factory(ACK_MODE="kafka", KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}",
                                  KAFKA_PRODUCE_TIMEOUT_SECONDS="2")
    ready = wait_until(lambda: (r := httpx.get(collector.url + "/readyz")).status_code == 503 and r, timeout=10)
    assert "Kafka brokers unreachable" in " ".join(ready.json()["reasons"]), ready.json()
    assert ready.json()["kafka"]["brokers"] == "unreachable"

    single = collector.post_event(event())  # the fast path
    batch = collector.http.post("/events/batch", json=[event(), event()], headers=collector.auth())
    for response in (single, batch):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
    assert metric(collector, "event_collector_events_received_total", outcome="unavailable") == 3
    assert metric(collector, "event_collector_events_received_total", outcome="created") == 0


@pytest.mark.slow
def test_events_answered_2xx_are_in_the_topic_once_keyed_by_user(kafka: KafkaCluster, kafka_collector,
                                                                    opensearch) -> None:
    collector = kafka_collector()
    sent: dict[str, list[str]] = {}  # user -> log_ids in the order they were answered
    for n in range(40):  # the fast path: small single events
        user = f"user-{n % 4}"
        body = event()
        response = collector.http.post("/events", json=body, headers=collector.auth(user))
        assert response.status_code == 200 and response.json() == {"status": "created"}, response.text
        sent.setdefault(user, []).append(body["log_id"])
    assert metric(collector, "event_collector_fast_path_answers_total") >= 40
    # The ASGI path: a gzip body never takes the fast path.
    body = event()
    response = collector.http.post("/events", content=gzip.compress(json.dumps(body).encode()),
                                   headers={**collector.auth("user-0"), "content-encoding": "gzip"})
    assert response.status_code == 200, response.text
    sent["user-0"].append(body["log_id"])
    # A batch with one invalid event: the valid ones are acknowledged together.
    batch = [event(), {"log_id": "no-page"}, event()]
    response = collector.http.post("/events/batch", json=batch, headers=collector.auth("user-9"))
    assert response.status_code == 200 and response.json()["accepted"] == 2, response.text
    sent["user-9"] = [batch[0]["log_id"], batch[2]["log_id"]]
    # An event near MAX_BODY_BYTES (1 MiB): above librdkafka's default record limit, within the API's and the topic's.
    big = event(param={f"k{n}": "x" * 30_000 for n in range(34)})
    response = collector.http.post("/events", json=big, headers=collector.auth("user-big"))
    assert response.status_code == 200, response.text
    sent["user-big"] = [big["log_id"]]
    assert metric(collector, "event_collector_kafka_records_produced_total") == 44

    records = read_topic(kafka.bootstrap_servers, f"events_{collector.environment}")
    answered = [log_id for ids in sent.values() for log_id in ids]
    assert sorted(log_ids(records)) == sorted(answered), "lost, duplicated or refused events in the topic"
    for user, ids in sent.items():
        mine = [r for r in records if r.key() == user.encode()]
        assert len({r.partition() for r in mine}) == 1, f"{user}'s events in several partitions"
        assert log_ids(sorted(mine, key=lambda r: r.offset())) == ids, f"{user}'s events out of order"

    # What an indexer makes of the records: the SQLite path's bulk action (create, _id = log_id, the index of
    # the event's month) with the document as accepted, which the real OpenSearch takes.
    envelopes = [from_record(r.key(), r.value(), r.headers()) for r in records]
    for envelope, record in zip(envelopes, records):
        document = msgspec.json.decode(envelope.document)
        assert document["log_id"] == envelope.log_id and document["user_id"] == record.key().decode()
        assert envelope.index.startswith(f"events_{collector.environment}_")
    body = bulk_body(envelopes)
    first = msgspec.json.decode(body.split(b"\n")[0])
    assert first == {"create": {"_index": envelopes[0].index, "_id": envelopes[0].log_id}}
    answer = httpx.post(f"{OPENSEARCH_URL}/_bulk", content=body, headers={"content-type": "application/x-ndjson"},
                        timeout=60)
    outcome = classify(envelopes, answer.status_code, answer.json())
    assert len(outcome.delivered) == len(envelopes) and not outcome.retry and not outcome.rejected, outcome
    assert opensearch.count(collector.environment) == len(answered)
    assert collector.stop() == 0, collector.log()  # every 2xx was acknowledged: a clean stop


def leader_port(bootstrap: str, topic: str, partition: int) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return metadata.brokers[metadata.topics[topic].partitions[partition].leader].port


@pytest.mark.slow
def test_a_broker_killed_under_load_loses_no_acknowledged_event(kafka: KafkaCluster, kafka_collector) -> None:
    # Long enough to wait out the fencing of the dead broker (broker.session.timeout.ms 3 s here).
    collector = kafka_collector(KAFKA_PRODUCE_TIMEOUT_SECONDS="30")
    topic = f"events_{collector.environment}"
    with Load(collector, clients=3) as load:
        wait_until(lambda: load.count(200) >= 300, timeout=60, message="300 events answered 2xx")
        before = load.count(200)
        kafka.kill(leader_port(kafka.bootstrap_servers, topic, 0))
        wait_until(lambda: load.count(200) >= before + 600, timeout=120,
                   message="600 more events answered 2xx after the kill")
    assert load.retry_after_missing == 0
    records = read_topic(kafka.bootstrap_servers, topic)
    counts: dict[str, int] = {}
    for log_id in log_ids(records):
        counts[log_id] = counts.get(log_id, 0) + 1
    report = delivery_report("kafka: a broker killed under load (in the topic)", load, counts,
                             fault="kafka_broker_killed", ack_mode="kafka", drain_seconds=None,
                             settings={"brokers": "3, replication 3, min.insync.replicas 2",
                                       "counted": "in the topic (acks=all)"})
    assert report["lost"] == 0 and report["duplicated"] == 0, (report, load.statuses)
    missing = set(load.accepted) - set(counts)
    assert not missing, f"{len(missing)} events answered 2xx are not in the topic"
    assert all(n == 1 for n in counts.values()), "the idempotent producer wrote a record twice"
    assert len(load.accepted) == len(set(load.accepted))


@pytest.mark.slow
def test_all_brokers_down_is_503_and_nothing_refused_reaches_the_topic(kafka: KafkaCluster, kafka_collector) -> None:
    collector = kafka_collector(KAFKA_PRODUCE_TIMEOUT_SECONDS="3")
    first = event()
    assert collector.post_event(first).status_code == 200
    kafka.stop()
    refused = []
    for _ in range(5):
        body = event()
        response = collector.post_event(body)
        assert response.status_code == 503 and response.headers["retry-after"] == "5", response.text
        refused.append(body["log_id"])
    batch = [event(), event()]
    response = collector.http.post("/events/batch", json=batch, headers=collector.auth())
    assert response.status_code == 503, response.text
    refused += [body["log_id"] for body in batch]
    wait_until(lambda: httpx.get(collector.url + "/readyz").status_code == 503, timeout=30,
               message="/readyz to say the brokers are gone")

    kafka.start()
    wait_until(lambda: httpx.get(collector.url + "/readyz").status_code == 200, timeout=60,
               message="/readyz to see the brokers back")
    last = event()
    assert collector.post_event(last).status_code == 200
    ids = log_ids(read_topic(kafka.bootstrap_servers, f"events_{collector.environment}"))
    assert sorted(ids) == sorted([first["log_id"], last["log_id"]]), "a refused event reached the topic"


def test_serve_refuses_kafka_settings_that_cannot_work(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "event_collector.cli", "serve"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60,
                            env={"JWT_SECRET": "x" * 40, "ACK_MODE": "kafka", "PATH": "/usr/bin:/bin",
                                 "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9", "KAFKA_SECURITY_PROTOCOL": "sasl_ssl"})
    assert result.returncode == 2 and "KAFKA_SASL_USERNAME" in result.stderr, result.stderr
    assert not list(tmp_path.glob("*.db")), "kafka mode made a pending store"


