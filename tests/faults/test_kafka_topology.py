"""The third topology (docs/scale.md): two stateless collectors in ACK_MODE=kafka behind haproxy, a three-broker
Kafka, two indexers and the OpenSearch dev node. Clients resend the same log_id when they get no final
answer. During the load one collector is killed with kill -9, one indexer is killed with kill -9 and
restarted, and one broker is killed: every event answered 2xx is indexed exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from support import (OPENSEARCH_URL, CollectorProcess, Haproxy, ResendingLoad,
                     assert_delivered_exactly_once, unique_environment, wait_until)

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
                                      opensearch, environment, sent=load.sent)
    finally:
        if balancer is not None:
            balancer.stop()
        for process in [c.process for c in collectors] + [i.process for i in indexers]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        kafka.start()  # the killed broker back, so that stop() is a clean controlled shutdown
