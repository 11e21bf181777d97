"""Groundwork for issue 12: scripts/kafka-dev runs a real three-broker Kafka (KRaft) that survives
the kill -9 of a broker without losing or duplicating what an idempotent acks=all producer wrote."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from support import KafkaCluster, wait_until

PARTITIONS = 3
PER_ROUND = 1000


def produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    """Write records first..first+count-1 and fail unless the brokers acknowledged every one."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5, "message.timeout.ms": 60_000})
    errors = []
    for i in range(first, first + count):
        # 20 users: a user's records share a partition and must keep their order there.
        producer.produce(topic, value=f"{i}".encode(), key=f"user-{i % 20}".encode(),
                         on_delivery=lambda err, _msg: err and errors.append(err))
        producer.poll(0)
    assert producer.flush(90) == 0, "records still unacknowledged"
    assert not errors, errors[:3]


def leader_port(bootstrap: str, topic: str, partition: int) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    leader = metadata.topics[topic].partitions[partition].leader
    return metadata.brokers[leader].port


def read_all(bootstrap: str, topic: str) -> list[tuple[str, int]]:
    """Every record of the topic, by offsets from the start to each partition's end: (key, value)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        records, positions = [], dict.fromkeys(ends, 0)

        def drained() -> bool:
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    raise KafkaException(message.error())
                records.append((message.key().decode(), int(message.value())))
                positions[message.partition()] = message.offset() + 1
            return all(positions[p] >= ends[p] for p in ends)

        wait_until(drained, timeout=60, interval=0, message="the topic to be read to its end")
        return records
    finally:
        consumer.close()


def test_three_brokers_survive_a_kill_without_loss_or_duplicates(kafka: KafkaCluster) -> None:
    assert len(kafka.ports) == 3 and all(kafka.pid(port) for port in kafka.ports)
    topic = "smoke"
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=3,
                                  config={"min.insync.replicas": "2"})])[topic].result(timeout=30)

    produce(kafka.bootstrap_servers, topic, 0, PER_ROUND)
    # The leader of partition 0 dies: its partitions must move, and acks=all still needs two in sync.
    killed = kafka.kill(leader_port(kafka.bootstrap_servers, topic, 0))
    assert kafka.pid(killed) is None
    produce(kafka.bootstrap_servers, topic, PER_ROUND, PER_ROUND)
    assert leader_port(kafka.bootstrap_servers, topic, 0) != killed

    records = read_all(kafka.bootstrap_servers, topic)
    values = [value for _key, value in records]
    assert len(values) == 2 * PER_ROUND, f"{len(values)} records, {len(set(values))} distinct"
    assert sorted(values) == list(range(2 * PER_ROUND)), "lost or duplicated records"
    for user in {key for key, _value in records}:
        mine = [value for key, value in records if key == user]
        assert mine == sorted(mine), f"{user}'s records out of order"

    # The killed broker comes back on its port and storage and rejoins (start waits for full ISR).
    kafka.start()
    assert kafka.pid(killed) is not None
