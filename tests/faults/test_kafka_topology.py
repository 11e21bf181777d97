"""The third topology (docs/scale.md) on a three-broker Kafka, with the OpenSearch dev node.

- Two stateless collectors in ACK_MODE=kafka behind haproxy and two indexers. Clients resend the same log_id
  when they get no final answer. During the load one collector is killed with kill -9, one indexer is killed
  with kill -9 and restarted, and one broker is killed: every event answered 2xx is indexed exactly once.
- A dead-letter topic the brokers cannot write (replication factor 3, min.insync.replicas=3, one broker
  killed) while events OpenSearch refuses arrive: no offset is committed past a letter the brokers have not
  acknowledged, and once the broker is back every event is in OpenSearch or in the dead-letter topic.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from event_collector.envelope import Envelope, format_timestamp, index_name
from event_collector.kafka.records import to_record
from support import (OPENSEARCH_URL, CollectorProcess, Haproxy, ResendingLoad,
                     assert_delivered_exactly_once, delivery_report, unique_environment, wait_until)

pytestmark = pytest.mark.slow


class Indexer:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path, self.env = tmp_path, env
        self.log_path = tmp_path / f"indexer-{uuid.uuid4().hex[:6]}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Indexer":
        self.process = subprocess.Popen([sys.executable, "-m", "event_collector.cli", "index"], env=self.env,
                                        cwd=self.tmp_path, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def test_collectors_indexers_and_a_broker_killed_under_load_lose_and_duplicate_nothing(kafka, tmp_path, opensearch):
    environment = unique_environment()
    topic = f"events_{environment}"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    created = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=3,
                                            config={"min.insync.replicas": "2"})
                                   for name, partitions in ((topic, 6), (f"{topic}.dead-letter", 1))])
    for future in created.values():
        future.result(timeout=60)
    kafka_settings = {"ACK_MODE": "kafka", "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                      "SERVER_ENVIRONMENT": environment, "BULK_SIZE": "100",
                      # Partitions led by a killed broker stall until it is fenced (a few seconds here).
                      "KAFKA_PRODUCE_TIMEOUT_SECONDS": "30"}
    collectors = [CollectorProcess(tmp_path, DATABASE=tmp_path / f"collector-{n}.db", **kafka_settings)
                  for n in range(2)]
    indexer_env = {**os.environ, **kafka_settings, "OPEN_SEARCH_DNS": OPENSEARCH_URL, "LOG_FORMAT": "text",
                   "RETRY_BACKOFF_BASE_SECONDS": "0.2", "RETRY_BACKOFF_MAX_SECONDS": "1"}
    indexers = [Indexer(tmp_path, indexer_env) for _ in range(2)]
    balancer = None
    try:
        for collector in collectors:
            collector.start()
        for indexer in indexers:
            indexer.start()
        balancer = Haproxy(tmp_path, [collector.port for collector in collectors]).start()
        killed_collector, _ = collectors
        killed_indexer, _ = indexers
        with ResendingLoad(balancer.url, killed_collector.auth()) as load:
            def more(count: int, what: str) -> None:
                target = len(load.accepted) + count
                wait_until(lambda: len(load.accepted) >= target, timeout=120, message=what)

            more(300, "load before the kills")
            wait_until(lambda: opensearch.count(environment) > 0, timeout=90, message="the indexers indexing")
            killed_collector.process.send_signal(signal.SIGKILL)
            killed_collector.process.wait(30)
            more(300, "load on one collector")
            killed_indexer.process.send_signal(signal.SIGKILL)
            killed_indexer.process.wait(30)
            more(200, "load with one indexer")
            killed_indexer.start()
            kafka.kill(kafka.ports[1])
            more(300, "load with a broker down")
        print(f"sent {load.sent}, resent {load.resent} times, accepted {len(load.accepted)}")
        assert len(set(load.accepted)) == len(load.accepted)
        assert_delivered_exactly_once("kafka topology: collector, indexer and broker killed", load.accepted,
                                      opensearch, environment, sent=load.sent, fault="collector_killed",
                                      ack_mode="kafka", settings={"brokers": "3, replication 3, min.insync.replicas 2", "collectors": "2 behind haproxy",
                                                "indexers": "2"})
    finally:
        if balancer is not None:
            balancer.stop()
        for process in [c.process for c in collectors] + [i.process for i in indexers]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        kafka.start()  # the killed broker back, so that stop() is a clean controlled shutdown


# While a killed broker's groups move to another coordinator, asking one for offsets fails for a moment.
_COORDINATOR_MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                       KafkaError.COORDINATOR_NOT_AVAILABLE}


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, asked again while its coordinator moves (never an empty guess: a caller
    checks that nothing was committed past a point)."""
    answer: dict[int, int] = {}

    def answered() -> bool:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        except KafkaException as exc:
            if exc.args[0].code() not in _COORDINATOR_MOVING:
                raise
            return False
        finally:
            consumer.close()
        answer.update((tp.partition, max(tp.offset, 0)) for tp in offsets)
        return True

    wait_until(answered, timeout=60, message=f"group {group}'s coordinator to answer for its offsets")
    return answer


def _letters(bootstrap: str, topic: str) -> list:
    """Every record of the one-partition dead-letter topic."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    try:
        end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)[1]
        letters: list = []
        if end:
            consumer.assign([TopicPartition(topic, 0, 0)])
            wait_until(lambda: letters.extend(m for m in consumer.consume(100, timeout=1) if not m.error())
                       or len(letters) >= end, timeout=60, message=f"{end} letters read")
        return letters
    finally:
        consumer.close()


def _produce_with_poison(bootstrap: str, topic: str, index: str, count: int):
    """`count` events, one in eight with a label the index maps as `long` (refused by OpenSearch): the events,
    the refused log_ids, and where each landed (log_id: (partition, offset))."""
    now = time.time()
    sent, poison, placed = [], set(), {}
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for n in range(count):
        refused = n % 8 == 3
        log_id = f"{'poison' if refused else 'good'}-{uuid.uuid4()}"
        document = msgspec.json.encode({"log_id": log_id, "received_at": format_timestamp(now), "event_info": {
            "page": "home", "event": "click", "label": "oops" if refused else str(n)}})
        envelope = Envelope(index=index, log_id=log_id, document=document, received_at=now, user_id=f"user-{n % 5}")
        sent.append(envelope)
        if refused:
            poison.add(log_id)
        key, value, headers = to_record(envelope)
        producer.produce(topic, key=key, value=value, headers=headers,
                         on_delivery=lambda err, m, log_id=log_id:
                         err or placed.__setitem__(log_id, (m.partition(), m.offset())))
    assert producer.flush(60) == 0 and len(placed) == len(sent)
    return sent, poison, placed


def test_no_offset_is_committed_past_a_dead_letter_the_brokers_did_not_take(kafka, tmp_path, opensearch):
    environment = unique_environment()
    topic, dead_letter_topic, group = f"events_{environment}", f"events_{environment}.dead-letter", \
        f"event-collector-{environment}"
    partitions = 2
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    # Every replica must acknowledge a letter: with one broker down, none is taken.
    created = admin.create_topics([
        NewTopic(topic, num_partitions=partitions, replication_factor=3, config={"min.insync.replicas": "2"}),
        NewTopic(dead_letter_topic, num_partitions=1, replication_factor=3, config={"min.insync.replicas": "3"})])
    for future in created.values():
        future.result(timeout=60)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "SERVER_ENVIRONMENT": environment,
           "OPEN_SEARCH_DNS": OPENSEARCH_URL, "LOG_FORMAT": "text", "BULK_SIZE": "100",
           "KAFKA_PRODUCE_TIMEOUT_SECONDS": "3"}
    first, second = Indexer(tmp_path, env), Indexer(tmp_path, env)

    def committed() -> dict[int, int]:
        return _committed(kafka.bootstrap_servers, group, topic, partitions)

    try:
        first.start()
        wait_until(lambda: "index template" in first.log() and "partitions assigned: events_" in first.log(),
                   timeout=90, message=f"the indexer in the group\n{first.log()}")
        index = index_name(environment, time.time())
        opensearch.http.put(f"/{index}", json={"mappings": {"properties": {
            "event_info": {"properties": {"label": {"type": "long"}}}}}}).raise_for_status()
        try:
            kafka.kill(kafka.ports[2])
            sent, poison, placed = _produce_with_poison(kafka.bootstrap_servers, topic, index, 40)
            ends = {p: 1 + max((o for q, o in placed.values() if q == p), default=-1) for p in range(partitions)}
            first_letter = {p: min(o for i, (q, o) in placed.items() if q == p and i in poison)
                            for p in {placed[i][0] for i in poison}}

            def past_unwritten_letters() -> dict[int, int]:
                """Partitions committed past their first letter, and how far, while the topic holds no letter."""
                return {p: offset for p, offset in committed().items() if offset > first_letter.get(p, offset)}

            # Either the letters are reported unwritten, or the batch is committed past them regardless.
            wait_until(lambda: "could not write" in first.log() or past_unwritten_letters(), timeout=90,
                       message=f"the letters refused or the batch committed\n{first.log()}")
            # The member stops while the topic is still unwritable: what it committed by then is all it commits.
            first.process.send_signal(signal.SIGTERM)
            assert first.process.wait(60) == 0, first.log()
            assert _letters(kafka.bootstrap_servers, dead_letter_topic) == []
            committed_past = past_unwritten_letters()
        finally:
            kafka.start()
        second.start()
        wait_until(lambda: committed() == ends, timeout=120, message=f"every offset committed\n{second.log()}")
    finally:
        for process in (first.process, second.process):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    records = _letters(kafka.bootstrap_servers, dead_letter_topic)
    letters = {dict(m.headers())["log_id"].decode() for m in records}
    counts = opensearch.log_id_counts(environment)
    # Lost: in neither OpenSearch nor the dead-letter topic.
    report = delivery_report("kafka indexer: dead-letter topic unwritable", [e.log_id for e in sent],
                             {**counts, **{log_id: 1 for log_id in letters - set(counts)}},
                             fault="dead_letter_unwritable", ack_mode="kafka", drain_seconds=None,
                             settings={"indexers": "2", "counted": "indexed or in the dead-letter topic"})
    print(f"{len(sent)} events, {len(poison)} refused; committed past unwritten letters: {committed_past} "
          f"(first letter per partition {first_letter}); {len(records)} letters of {len(letters)} events; {report}")
    assert committed_past == {}, f"committed {committed_past} past unwritten letters at {first_letter}"
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    assert letters == poison and set(counts) == {e.log_id for e in sent} - poison
    assert re.search(r"abandoned, uncommitted, [1-9]\d* of its dead letters not acknowledged", first.log()), \
        first.log()
