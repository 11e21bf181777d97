"""`event-collector index` against a real Kafka broker and the real OpenSearch node: events on the topic are
indexed exactly once, offsets are committed only after delivery, two indexers share the partitions and
survive the kill -9 of one, an outage pauses them without skipping, refused events go to the
dead-letter topic, from where `dead-letter requeue` brings them back once the mapping is fixed, and a record
spread over several lines costs no other record its attempts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from event_collector.envelope import Envelope, format_timestamp, index_name
from event_collector.kafka.records import to_record
from support import OPENSEARCH_URL, KafkaCluster, StallingProxy, delivery_report, free_port, unique_environment, \
    wait_until

PARTITIONS = 4


@pytest.fixture(scope="module")
def kafka(tmp_path_factory) -> KafkaCluster:
    # One broker: these tests are about the indexer, not broker failures (tests/faults/ kills brokers).
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka"), brokers=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


class Topics:
    """A fresh environment: its topic, dead-letter topic and group, created on the broker."""

    def __init__(self, kafka: KafkaCluster) -> None:
        self.bootstrap = kafka.bootstrap_servers
        self.environment = unique_environment()
        self.topic = f"events_{self.environment}"
        self.dead_letter_topic = f"{self.topic}.dead-letter"
        self.group = f"event-collector-{self.environment}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})  # kept alive until its futures are done
        created = admin.create_topics([NewTopic(self.topic, PARTITIONS), NewTopic(self.dead_letter_topic, 2)])
        for future in created.values():
            future.result(timeout=30)

    def env(self, **settings) -> dict[str, str]:
        return {**os.environ, "SERVER_ENVIRONMENT": self.environment, "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "OPEN_SEARCH_DNS": OPENSEARCH_URL, "RETRY_BACKOFF_BASE_SECONDS": "0.2",
                "RETRY_BACKOFF_MAX_SECONDS": "1", "LOG_FORMAT": "text", "LOG_LEVEL": "INFO",
                **{key: str(value) for key, value in settings.items()}}

    def produce(self, envelopes: list[Envelope], extra: list[tuple[bytes, bytes, list]] = ()) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all"})
        for key, value, headers in [to_record(e) for e in envelopes] + list(extra):
            producer.produce(self.topic, key=key, value=value, headers=headers)
            producer.poll(0)
        assert producer.flush(60) == 0

    def committed(self) -> int:
        """The sum of the group's committed offsets: how many records it has settled."""
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.group})
        try:
            offsets = consumer.committed([TopicPartition(self.topic, p) for p in range(PARTITIONS)], timeout=10)
        finally:
            consumer.close()
        return sum(max(tp.offset, 0) for tp in offsets)

    def dead_letters(self) -> list:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "reader", "enable.auto.commit": False})
        try:
            ends = {p: consumer.get_watermark_offsets(TopicPartition(self.dead_letter_topic, p), timeout=10)[1]
                    for p in range(2)}
            if not sum(ends.values()):
                return []
            consumer.assign([TopicPartition(self.dead_letter_topic, p, 0) for p in range(2)])
            letters = []
            while len(letters) < sum(ends.values()):
                letters += [m for m in consumer.consume(100, timeout=1) if not m.error()]
            return letters
        finally:
            consumer.close()


def envelopes(environment: str, count: int, label=lambda n: str(n), prefix: str = "") -> list[Envelope]:
    now = time.time()
    result = []
    for n in range(count):
        log_id = f"{prefix}{uuid.uuid4()}"
        user = f"user-{n % 10}"
        document = msgspec.json.encode({"log_id": log_id, "user_id": user, "event_info": {
            "page": "home", "event": "click", "label": label(n)}, "received_at": format_timestamp(now)})
        result.append(Envelope(index=index_name(environment, now), log_id=log_id, document=document,
                               received_at=now, user_id=user))
    return result


class IndexerProcess:
    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.log_path = tmp_path / f"indexer-{uuid.uuid4().hex[:6]}.log"
        self.process = subprocess.Popen([sys.executable, "-m", "event_collector.cli", "index"], env=env,
                                        cwd=tmp_path, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)


@pytest.fixture
def indexers(tmp_path):
    started: list[IndexerProcess] = []

    def start(env: dict[str, str]) -> IndexerProcess:
        started.append(IndexerProcess(tmp_path, env))
        return started[-1]

    yield start
    for indexer in started:
        if indexer.process.poll() is None:
            indexer.process.kill()
            indexer.process.wait()


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "event_collector.cli", *args], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_once(name: str, sent: list[Envelope], opensearch, environment: str, *, fault: str,
                settings: dict[str, object]) -> None:
    counts = opensearch.log_id_counts(environment)
    # Each caller has waited for the count itself, so the time to drain is not measured here.
    report = delivery_report(name, [e.log_id for e in sent], counts, fault=fault, ack_mode="kafka",
                             drain_seconds=None, settings=settings)
    assert (report["lost"], report["duplicated"]) == (0, 0), report
    assert set(counts) == {e.log_id for e in sent}


def test_events_on_the_topic_are_indexed_once_with_their_ids_and_bodies(kafka, indexers, opensearch):
    topics = Topics(kafka)
    sent = envelopes(topics.environment, 600)
    topics.produce(sent)
    indexer = indexers(topics.env(BULK_SIZE=100, ACK_MODE="kafka"))
    wait_until(lambda: opensearch.count(topics.environment) >= len(sent), timeout=90,
               message="the topic indexed")
    assert_once("kafka indexer: one indexer", sent, opensearch, topics.environment, fault="none",
                settings={"indexers": "1"})
    document = opensearch.indexed_document(topics.environment, sent[5].log_id)
    assert document == msgspec.json.decode(sent[5].document)
    # Every record settled is committed, and only then.
    wait_until(lambda: topics.committed() == len(sent), timeout=30, message="offsets committed")
    assert indexer.stop() == 0, indexer.log()
    assert "600 events delivered, 0 dead-lettered" in indexer.log()


@pytest.mark.slow
def test_two_indexers_share_the_partitions_and_one_killed_hands_them_over(kafka, indexers, opensearch):
    topics = Topics(kafka)
    env = topics.env(BULK_SIZE=50)
    first, second = indexers(env), indexers(env)
    wait_until(lambda: "partitions assigned: events_" in first.log() and
               "partitions assigned: events_" in second.log(), timeout=60, message="both indexers assigned")
    sent = envelopes(topics.environment, 2000)
    topics.produce(sent[:1000])
    wait_until(lambda: opensearch.count(topics.environment) >= 200, timeout=60, message="indexing under way")
    first.process.kill()  # kill -9: its batch in flight is neither finished nor committed
    first.process.wait()
    topics.produce(sent[1000:])
    wait_until(lambda: opensearch.count(topics.environment) >= len(sent), timeout=120,
               message=f"every event indexed after the kill\n{second.log()}")
    assert_once("kafka indexer: one of two killed", sent, opensearch, topics.environment, fault="worker_killed",
                settings={"indexers": "2, one killed"})
    wait_until(lambda: topics.committed() == len(sent), timeout=60, message="every offset committed by the survivor")
    assert second.stop() == 0, second.log()


def test_an_outage_pauses_the_indexer_without_committing_or_skipping(kafka, indexers, opensearch):
    topics = Topics(kafka)
    proxy = StallingProxy(upstream_port=free_port())  # nothing listens there: every connection is refused
    try:
        env = topics.env(OPEN_SEARCH_DNS=f"http://127.0.0.1:{proxy.port}", BULK_SIZE=100, OPEN_SEARCH_TIMEOUT_SECONDS=2)
        stopped, indexer = indexers(env), indexers(env)
        sent = envelopes(topics.environment, 300)
        topics.produce(sent)
        wait_until(lambda: "delivery paused" in indexer.log() and "delivery paused" in stopped.log(), timeout=60,
                   message="the breakers to open")
        # Held for a while through several probes: no offset moves, nothing is skipped.
        wait_until(lambda: indexer.log().count("unreachable") >= 3, timeout=60, message="probes")
        assert topics.committed() == 0
        assert opensearch.count(topics.environment) == 0
        # A stop while paused abandons the held batch at once, uncommitted; the other member takes it over.
        started = time.monotonic()
        assert stopped.stop() == 0, stopped.log()
        assert time.monotonic() - started < 15, stopped.log()
        assert topics.committed() == 0
        proxy.upstream_port = int(OPENSEARCH_URL.rstrip("/").rsplit(":", 1)[1])
        wait_until(lambda: opensearch.count(topics.environment) >= len(sent), timeout=90,
                   message=f"delivered after OpenSearch returned\n{indexer.log()}")
        assert_once("kafka indexer: OpenSearch outage", sent, opensearch, topics.environment,
                    fault="opensearch_down", settings={"indexers": "2, one stopped during the outage"})
        wait_until(lambda: topics.committed() == len(sent), timeout=30, message="offsets committed after the outage")
        assert indexer.stop() == 0
    finally:
        proxy.close()


def test_refused_events_are_dead_lettered_and_requeued_after_the_fix(kafka, indexers, opensearch):
    topics = Topics(kafka)
    env = topics.env(BULK_SIZE=40, ACK_MODE="kafka")
    indexer = indexers(env)
    wait_until(lambda: "index template" in indexer.log(), timeout=60, message="the template installed")
    index = index_name(topics.environment, time.time())
    opensearch.http.put(f"/{index}", json={"mappings": {"properties": {
        "event_info": {"properties": {"label": {"type": "long"}}}}}}).raise_for_status()
    sent = envelopes(topics.environment, 150, label=lambda n: "oops" if n % 20 == 3 else str(n))
    poison = {e.log_id for e in sent if msgspec.json.decode(e.document)["event_info"]["label"] == "oops"}
    not_an_event = (b"someone", b"{}", [("origin", b"elsewhere")])
    topics.produce(sent)
    wait_until(lambda: len(topics.dead_letters()) == len(poison), timeout=90,
               message=f"the refused events dead-lettered\n{indexer.log()}")
    # Last, so that it is the last letter of its partition (the requeue mark below stops before it).
    topics.produce([], extra=[not_an_event])
    wait_until(lambda: len(topics.dead_letters()) == len(poison) + 1, timeout=60,
               message="the odd record dead-lettered")
    wait_until(lambda: topics.committed() == len(sent) + 1, timeout=30, message="every offset committed")
    assert opensearch.count(topics.environment) == len(sent) - len(poison)
    letters = {dict(m.headers()).get("log_id", b"").decode(): dict(m.headers()) for m in topics.dead_letters()}
    assert set(letters) == poison | {""}
    some = letters[next(iter(poison))]
    assert some["dead_letter_status"] == b"400" and b"mapper_parsing_exception" in some["dead_letter_reason"]
    assert b"not an event record" in letters[""]["dead_letter_reason"]

    listing = cli(env, "dead-letter", "list", "--reason", "mapper_parsing")
    assert f"{len(poison)} dead letters in {topics.dead_letter_topic}" in listing
    assert all(log_id in listing for log_id in poison)

    # The fix: malformed values are ignored instead of refused.
    opensearch.http.post(f"/{index}/_close").raise_for_status()
    opensearch.http.put(f"/{index}/_settings", json={"index.mapping.ignore_malformed": True}).raise_for_status()
    opensearch.http.post(f"/{index}/_open", params={"wait_for_active_shards": "1"}).raise_for_status()
    assert f"{len(poison)} dead letters requeued to {topics.topic}" in cli(env, "dead-letter", "requeue",
                                                                          "--reason", "mapper")
    wait_until(lambda: opensearch.count(topics.environment) >= len(sent), timeout=60, message="requeued ones indexed")
    assert_once("kafka indexer: poison events requeued after the fix", sent, opensearch, topics.environment,
                fault="poison_events", settings={"indexers": "1"})
    # The requeue mark: the same letters are not requeued twice; the record that is not an event stays.
    assert "0 dead letters requeued" in cli(env, "dead-letter", "requeue", "--reason", "mapper")
    assert "1 dead letters requeued" in cli(env, "dead-letter", "requeue", "--reason", "not an event")
    assert indexer.stop() == 0


def test_a_record_with_raw_newlines_costs_only_itself_and_the_batch_is_not_retried(kafka, indexers, opensearch):
    topics = Topics(kafka)
    sent = envelopes(topics.environment, 30)
    # Another producer's pretty-printed JSON: valid once it is one line again.
    pretty = envelopes(topics.environment, 1, prefix="pretty-")[0]
    pretty_record = to_record(msgspec.structs.replace(pretty, document=msgspec.json.format(pretty.document, indent=2)))
    assert pretty_record[1].count(b"\n") > 3
    # A letter edited by hand into something that is not JSON, newline included, and produced again.
    broken = envelopes(topics.environment, 1, prefix="broken-")[0]
    broken_record = to_record(msgspec.structs.replace(broken, document=b'{"log_id": "' + broken.log_id.encode() +
                                                      b'",\n oops}'))
    topics.produce(sent[:15], extra=[pretty_record, broken_record])
    topics.produce(sent[15:])
    indexer = indexers(topics.env(BULK_SIZE=100))
    wait_until(lambda: opensearch.count(topics.environment) >= len(sent) + 1 or "kept for retry" in indexer.log(),
               timeout=60, message=f"the topic indexed\n{indexer.log()}")
    # No request was refused as a whole: nothing waited for a retry, each record was settled at its first try.
    assert "kept for retry" not in indexer.log(), indexer.log()
    assert_once("kafka indexer: a record with raw newlines", sent + [pretty], opensearch, topics.environment,
                fault="poison_events", settings={"indexers": "1"})
    assert opensearch.indexed_document(topics.environment, pretty.log_id) == msgspec.json.decode(pretty.document)
    wait_until(lambda: topics.committed() == len(sent) + 2, timeout=30, message="every offset committed")
    letters = topics.dead_letters()
    assert [dict(m.headers())["log_id"].decode() for m in letters] == [broken.log_id]
    assert b"not JSON" in dict(letters[0].headers())["dead_letter_reason"]
    assert letters[0].value() == broken_record[1]
    assert indexer.stop() == 0


def test_the_indexer_maps_a_rules_files_typed_fields(kafka, indexers, opensearch, tmp_path):
    topics = Topics(kafka)
    rules = tmp_path / "rules.yaml"
    rules.write_text("sources: {events: {events: {purchase: {properties: {properties: {price: {type: number}}}}}}}")
    sent = envelopes(topics.environment, 1)
    # A whole number first: without the plan's mapping OpenSearch would guess `long` and cut every later 9.5.
    sent[0].document = sent[0].document[:-1] + b',"typed":{"price":10}}'
    topics.produce(sent)
    indexer = indexers(topics.env(ACK_MODE="kafka", RULES_FILE=rules))
    wait_until(lambda: opensearch.count(topics.environment) >= 1, timeout=90, message="the topic indexed")
    mapping = opensearch.http.get(f"/events_{topics.environment}_*/_mapping/field/typed.price").json()
    assert [field["typed.price"]["mapping"]["price"]["type"] for field in
            (index["mappings"] for index in mapping.values())] == ["double"]
    assert indexer.stop() == 0, indexer.log()
