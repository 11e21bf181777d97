"""Compare the two Python Kafka clients for the future ack mode (issue 12). Not part of CI.

For each client: produce N small records with acks=all and an idempotent producer to a
replication-factor-3 topic and report records/s and CPU seconds of this process per 10k
records (getrusage covers librdkafka's threads too); then check consumer-group rebalancing
with two real consumer processes in one group, one of them killed with SIGKILL.

    scripts/kafka-dev start
    .venv/bin/python tools/kafka-dev/measure_clients.py --bootstrap "$(scripts/kafka-dev bootstrap)"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and CPU seconds from its creation (after the producer's warm-up) to stop()."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, cpu_seconds() - self.cpu


def warm_up(send, flush) -> None:
    """One record through before timing: connections and the idempotent producer id are set up."""
    send()
    flush()


def create_topic(bootstrap: str, partitions: int) -> str:
    topic = f"measure-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=3,
                                            config={"min.insync.replicas": "2"})])
    futures[topic].result(timeout=30)
    return topic


def records_in(bootstrap: str, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "measure-count"})
    try:
        total = 0
        for p in range(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def payload(i: int, size: int) -> tuple[bytes, bytes]:
    key = f"user-{i % 1000}".encode()
    return key, (f'{{"log_id":"{i:012d}","event":"page_view","data":"'.encode()
                 + b"x" * max(0, size - 60) + b'"}')


# confluent-kafka, as a plain script would use it: callbacks served by poll() in the same thread.
def produce_confluent(bootstrap: str, topic: str, n: int, size: int) -> tuple[float, float]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5})
    failed = []

    def on_delivery(err, _msg):
        if err is not None:
            failed.append(err)

    warm_up(lambda: producer.produce(topic, b"warm-up", b"warm-up"), lambda: producer.flush(30))
    clock = Clock()
    for i in range(n):
        key, value = payload(i, size)
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: serve callbacks, then retry
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0 and not failed, failed[:3]
    return clock.stop()


# confluent-kafka as the ack mode would use it: every record gets an asyncio future resolved
# from librdkafka's delivery callback, which a poller thread serves.
def produce_confluent_asyncio(bootstrap: str, topic: str, n: int, size: int) -> tuple[float, float]:
    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 5})
        stop = threading.Event()

        def poller() -> None:
            while not stop.is_set():
                producer.poll(0.05)

        thread = threading.Thread(target=poller, daemon=True)
        thread.start()

        def send(i: int) -> asyncio.Future:
            future = loop.create_future()

            def on_delivery(err, _msg):
                if err is None:
                    loop.call_soon_threadsafe(future.set_result, None)
                else:
                    loop.call_soon_threadsafe(future.set_exception, RuntimeError(str(err)))

            key, value = payload(i, size) if i >= 0 else (b"warm-up", b"warm-up")
            producer.produce(topic, value, key, on_delivery=on_delivery)
            return future

        await send(-1)  # warm-up: connections and the idempotent producer id
        clock = Clock()
        # Requests arrive concurrently: keep up to 5,000 records in flight, as many waiting clients would.
        window = 5000
        for start in range(0, n, window):
            await asyncio.gather(*(send(i) for i in range(start, min(n, start + window))))
        result = clock.stop()
        stop.set()
        thread.join()
        assert producer.flush(60) == 0
        return result

    return asyncio.run(run())


# As above, but one future per batch of 100 records, as the ack mode's group commit would wait: the
# delivery callbacks count down in the poller thread and only the last one wakes the event loop.
def produce_confluent_batches(bootstrap: str, topic: str, n: int, size: int, batch: int = 100) -> tuple[float, float]:
    async def run() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                             "linger.ms": 5})
        stop = threading.Event()

        def poller() -> None:
            while not stop.is_set():
                producer.poll(0.05)

        thread = threading.Thread(target=poller, daemon=True)
        thread.start()

        def send(indexes: range) -> asyncio.Future:
            future = loop.create_future()
            left, errors = [len(indexes)], []

            def on_delivery(err, _msg):  # runs in the poller thread
                if err is not None:
                    errors.append(err)
                left[0] -= 1
                if left[0] == 0:
                    loop.call_soon_threadsafe(future.set_result, errors)

            for i in indexes:
                key, value = payload(i, size) if i >= 0 else (b"warm-up", b"warm-up")
                producer.produce(topic, value, key, on_delivery=on_delivery)
            return future

        await send(range(-1, 0))
        clock = Clock()
        window = 5000
        for start in range(0, n, window):
            stop_at = min(n, start + window)
            results = await asyncio.gather(*(send(range(b, min(stop_at, b + batch)))
                                             for b in range(start, stop_at, batch)))
            assert not any(results), results
        result = clock.stop()
        stop.set()
        thread.join()
        assert producer.flush(60) == 0
        return result

    return asyncio.run(run())


# confluent-kafka's own asyncio producer (confluent_kafka.aio, marked experimental in 2.16): it gathers
# records in Python and hands them to librdkafka in batches from a thread pool.
def produce_confluent_aio(bootstrap: str, topic: str, n: int, size: int) -> tuple[float, float]:
    from confluent_kafka.aio import AIOProducer

    async def run() -> tuple[float, float]:
        producer = AIOProducer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                "linger.ms": 5}, buffer_timeout=0.01)
        try:
            await (await producer.produce(topic, b"warm-up", b"warm-up"))
            clock = Clock()
            window = 5000
            for start in range(0, n, window):
                futures = []
                for i in range(start, min(n, start + window)):
                    key, value = payload(i, size)
                    futures.append(await producer.produce(topic, value, key))
                await asyncio.gather(*futures)
            return clock.stop()
        finally:
            await producer.close()

    return asyncio.run(run())


def produce_aiokafka(bootstrap: str, topic: str, n: int, size: int) -> tuple[float, float]:
    from aiokafka import AIOKafkaProducer

    async def run() -> tuple[float, float]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                    linger_ms=5)
        await producer.start()
        try:
            await (await producer.send(topic, b"warm-up", key=b"warm-up"))
            clock = Clock()
            window = 5000
            for start in range(0, n, window):
                futures = []
                for i in range(start, min(n, start + window)):
                    key, value = payload(i, size)
                    futures.append(await producer.send(topic, value, key=key))
                await asyncio.gather(*futures)
            return clock.stop()
        finally:
            await producer.stop()

    return asyncio.run(run())


PRODUCERS = {
    "confluent-kafka": produce_confluent,
    "confluent-kafka + asyncio futures": produce_confluent_asyncio,
    "confluent-kafka + a future per 100 records": produce_confluent_batches,
    "confluent_kafka.aio.AIOProducer": produce_confluent_aio,
    "aiokafka": produce_aiokafka,
}


def measure_produce(bootstrap: str, n: int, size: int, partitions: int) -> list[dict]:
    results = []
    for name, produce in PRODUCERS.items():
        topic = create_topic(bootstrap, partitions)
        wall, cpu = produce(bootstrap, topic, n, size)
        stored = records_in(bootstrap, topic, partitions) - 1  # less the warm-up record
        result = {"client": name, "records": n, "stored": stored, "seconds": round(wall, 2),
                  "records_per_s": round(n / wall), "cpu_s_per_10k": round(cpu / n * 10_000, 3)}
        print(json.dumps(result), flush=True)
        results.append(result)
    return results


# --- consumer groups: one consumer per process, printing its assignment whenever it changes ---

def consume_confluent(bootstrap: str, topic: str, group: str, protocol: str = "classic") -> None:
    config = {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    if protocol == "classic":
        config.update({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})
    else:  # KIP-848: the broker assigns and owns the timeouts (scripts/kafka-dev sets them to 6 s / 1 s)
        config["group.protocol"] = "consumer"
    consumer = Consumer(config)
    consumer.subscribe([topic])
    shown = None
    while True:
        consumer.poll(0.2)
        now = sorted(tp.partition for tp in consumer.assignment())
        if now != shown:
            shown = now
            print(json.dumps(now), flush=True)


def consume_aiokafka(bootstrap: str, topic: str, group: str) -> None:
    from aiokafka import AIOKafkaConsumer

    async def run() -> None:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                    auto_offset_reset="earliest", session_timeout_ms=6000,
                                    heartbeat_interval_ms=1000)
        await consumer.start()
        shown = None
        while True:
            await consumer.getmany(timeout_ms=200)
            now = sorted(tp.partition for tp in consumer.assignment())
            if now != shown:
                shown = now
                print(json.dumps(now), flush=True)

    asyncio.run(run())


CONSUMERS = {
    "confluent-kafka": consume_confluent,
    "confluent-kafka group.protocol=consumer": lambda *args: consume_confluent(*args, protocol="consumer"),
    "aiokafka": consume_aiokafka,
}


class Member:
    def __init__(self, client: str, bootstrap: str, topic: str, group: str) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--consumer", client, "--bootstrap", bootstrap,
                                         "--topic", topic, "--group", group], stdout=subprocess.PIPE, text=True)
        self.assignment: list[int] | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.assignment = json.loads(line)


def wait_for(condition, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if condition():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise TimeoutError("condition not reached")


def check_rebalance(bootstrap: str, client: str, partitions: int = 4) -> dict:
    topic = create_topic(bootstrap, partitions)
    group = f"measure-group-{uuid.uuid4().hex[:8]}"
    everything = list(range(partitions))
    a = Member(client, bootstrap, topic, group)
    b = Member(client, bootstrap, topic, group)
    try:
        shared = wait_for(lambda: a.assignment and b.assignment
                          and sorted(a.assignment + b.assignment) == everything, 60)
        split = (list(a.assignment), list(b.assignment))
        os.kill(a.process.pid, signal.SIGKILL)
        moved = wait_for(lambda: b.assignment == everything, 60)
        result = {"client": client, "split": split, "shared_after_s": round(shared, 1),
                  "all_to_survivor_after_kill_s": round(moved, 1)}
    finally:
        for m in (a, b):
            m.process.kill()
            m.process.wait()
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=300, help="bytes per record value")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--skip-rebalance", action="store_true")
    parser.add_argument("--consumer", choices=CONSUMERS, help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer:
        CONSUMERS[args.consumer](args.bootstrap, args.topic, args.group)
        return
    measure_produce(args.bootstrap, args.n, args.size, args.partitions)
    if not args.skip_rebalance:
        for client in CONSUMERS:
            check_rebalance(args.bootstrap, client)


if __name__ == "__main__":
    main()
