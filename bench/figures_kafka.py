"""The Kafka figures: single[kafka] and end_to_end[kafka], against a one-broker scripts/kafka-dev that the
figure starts in the bench's temporary directory and stops."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid

from harness import Harness
from knobs import E2E_EVENTS, LOAD_CPU, OPENSEARCH, PYTHON, REPO, SECONDS, SECRET
from load import push_batches, wrk
from opensearch import delete_indices, wait_until_searchable
from servers import free_port


class KafkaFigures(Harness):
    """Figures of ACK_MODE=kafka: each 2xx waits for the broker's acknowledgement; indexers deliver."""

    def single_kafka(self) -> None:
        """`single` in ACK_MODE=kafka against a broker of its own (scripts/kafka-dev, one broker, state in the
        bench's temporary directory), started and stopped here."""
        from confluent_kafka.admin import AdminClient, NewTopic

        bootstrap = f"127.0.0.1:{free_port()}"
        # A state directory per round: kafka-dev keeps a directory's ports from its first start.
        kafka_env = {**os.environ, "KAFKA_DEV_DIR": str(self.workdir / f"kafka-{uuid.uuid4().hex[:8]}"), "KAFKA_DEV_BROKERS": "1",
                     "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
        kafka_dev = str(REPO / "scripts" / "kafka-dev")
        subprocess.run([kafka_dev, "start"], env=kafka_env, check=True, capture_output=True)
        try:
            broker = subprocess.run([kafka_dev, "pid", bootstrap.rsplit(":", 1)[1]], env=kafka_env, check=True,
                                    capture_output=True, text=True).stdout.strip()
            subprocess.run(["taskset", "-a", "-cp", LOAD_CPU, broker], capture_output=True, check=True)
            # Made before the collector asks for it (a broker would create a missing one with one partition).
            topic = "bench-" + uuid.uuid4().hex[:10]
            admin = AdminClient({"bootstrap.servers": bootstrap})
            admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(timeout=30)
            del admin  # its handle would log the broker's stop below
            server = self.collector("kafka", pinned=True, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic)
            try:
                cpu = server.cpu_seconds()
                result = wrk(server.url, self.token, pinned=True)
                cpu = server.cpu_seconds() - cpu
                self.record("single[kafka]", **result,
                            cpu_seconds_per_10k=cpu / max(1, result["accepted_per_second"] * SECONDS) * 10_000,
                            peak_rss_mb=server.memory_mb("VmHWM"))
            finally:
                server.stop()
            # The whole machine again for the run through Kafka and the indexers.
            subprocess.run(["taskset", "-a", "-cp", f"0-{(os.cpu_count() or 1) - 1}", broker], capture_output=True)
            self.end_to_end_kafka(bootstrap, admin_config={"bootstrap.servers": bootstrap})
        finally:
            subprocess.run([kafka_dev, "stop"], env=kafka_env, capture_output=True)

    def end_to_end_kafka(self, bootstrap: str, admin_config: dict[str, str]) -> None:
        """`end_to_end` through Kafka: collectors in ACK_MODE=kafka (SERVER_WORKERS = CPU count) take the
        batches, one indexer per CPU consumes a topic of as many partitions; first accept to last searchable."""
        from confluent_kafka.admin import AdminClient, NewTopic

        cpus = os.cpu_count() or 1
        topic = "bench-e2e-" + uuid.uuid4().hex[:10]
        admin = AdminClient(admin_config)  # kept until the topic exists: a dropped handle fails the request
        admin.create_topics([NewTopic(topic, num_partitions=cpus, replication_factor=1)])[topic].result(timeout=30)
        del admin
        server = self.collector("kafka", workers=cpus, KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_TOPIC=topic)
        indexers = []
        try:
            env = {**os.environ, "JWT_SECRET": SECRET, "OPEN_SEARCH_DNS": OPENSEARCH, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                   "KAFKA_TOPIC": topic, "KAFKA_GROUP_ID": topic, "SERVER_ENVIRONMENT": server.environment}  # type: ignore[attr-defined]
            log = open(self.workdir / f"indexers-{topic}.log", "wb")
            indexers = [subprocess.Popen([PYTHON, "-m", "event_collector.cli", "index"], env=env, cwd=self.workdir,
                                         stdout=log, stderr=subprocess.STDOUT) for _ in range(cpus)]
            first_accept, _ = asyncio.run(push_batches(server.url, self.token, E2E_EVENTS))
            last_searchable = wait_until_searchable(server.environment, E2E_EVENTS)  # type: ignore[attr-defined]
            delete_indices(server.environment)  # type: ignore[attr-defined]
            self.record("end_to_end[kafka]", events_per_second=E2E_EVENTS / (last_searchable - first_accept))
        finally:
            for indexer in indexers:
                indexer.terminate()
            for indexer in indexers:
                try:
                    indexer.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    indexer.kill()
            server.stop()
