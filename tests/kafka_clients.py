"""Thin adapters over the real Kafka clients under test (confluent-kafka, kafka-python,
aiokafka): create a topic with the client's admin API, produce, and consume with
assign/seek. Each returns plain data so tests can compare clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

CLIENTS = ["confluent-kafka", "kafka-python", "aiokafka"]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
Message = tuple[bytes | None, bytes]
Consumed = tuple[int, int, bytes | None, bytes]  # partition, offset, key, value


def create_topic(
    client: str, bootstrap: str, topic: str, partitions: int, replication_factor: int = 1
) -> None:
    if client == "confluent-kafka":
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)]
        )
        futures[topic].result(30)
    elif client == "kafka-python":
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(topic, partitions, replication_factor)])
        finally:
            admin.close()
    else:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def go() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, partitions, replication_factor)])
            finally:
                await admin.close()

        asyncio.run(go())


def produce(
    client: str, bootstrap: str, topic: str, messages: Sequence[Message], acks: str, codec: str
) -> None:
    """Produces and waits for every delivery; raises on a delivery error."""
    idempotent = acks == "all"
    if client == "confluent-kafka":
        from confluent_kafka import Producer

        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": {"all": "all", "1": "1", "0": "0"}[acks],
                "compression.type": codec,
                "partitioner": "murmur2_random",
                "enable.idempotence": idempotent,
                "linger.ms": 5,
            }
        )
        errors: list[object] = []
        for key, value in messages:
            p.produce(topic, key=key, value=value, on_delivery=lambda e, _m: errors.append(e) if e else None)
            p.poll(0)
        assert p.flush(60) == 0
        assert not errors, errors[:3]
    elif client == "kafka-python":
        from kafka import KafkaProducer

        p = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks={"all": "all", "1": 1, "0": 0}[acks],
            compression_type=None if codec == "none" else codec,
            enable_idempotence=idempotent,
            linger_ms=5,
        )
        futures = [p.send(topic, key=key, value=value) for key, value in messages]
        p.flush(60)
        for f in futures:
            f.get(30)
        p.close()
    else:
        from aiokafka import AIOKafkaProducer

        async def go() -> None:
            p = AIOKafkaProducer(
                bootstrap_servers=bootstrap,
                acks={"all": "all", "1": 1, "0": 0}[acks],
                compression_type=None if codec == "none" else codec,
                enable_idempotence=idempotent,
                linger_ms=5,
            )
            await p.start()
            try:
                futures = [await p.send(topic, key=key, value=value) for key, value in messages]
                await asyncio.gather(*futures)
            finally:
                await p.stop()

        asyncio.run(go())


def consume(
    client: str, bootstrap: str, topic: str, partitions: int, expected: int, timeout: float = 60
) -> list[Consumed]:
    """Reads every partition from the beginning with assign/seek until `expected` messages
    arrived (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    out: list[Consumed] = []
    if client == "confluent-kafka":
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "assign-only", "enable.auto.commit": False})
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        try:
            while len(out) < expected and time.monotonic() < deadline:
                for msg in c.consume(1000, 0.5):
                    assert not msg.error(), msg.error()
                    out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
        finally:
            c.close()
    elif client == "kafka-python":
        from kafka import KafkaConsumer, TopicPartition

        c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        try:
            while len(out) < expected and time.monotonic() < deadline:
                for tp, msgs in c.poll(500, max_records=5000).items():
                    out += [(tp.partition, m.offset, m.key, m.value) for m in msgs]
        finally:
            c.close()
    else:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def go() -> None:
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
            await c.start()
            try:
                tps = [TopicPartition(topic, p) for p in range(partitions)]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                while len(out) < expected and time.monotonic() < deadline:
                    batches = await c.getmany(timeout_ms=500, max_records=5000)
                    for tp, msgs in batches.items():
                        out.extend((tp.partition, m.offset, m.key, m.value) for m in msgs)
            finally:
                await c.stop()

        asyncio.run(go())
    return out
