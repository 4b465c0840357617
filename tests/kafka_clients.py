"""Thin adapters over the real Kafka clients under test (confluent-kafka, kafka-python,
aiokafka): create a topic with the client's admin API, produce, and consume with
assign/seek, over any security protocol (``Security``: TLS and SASL in each client's own
settings). Each returns plain data so tests can compare clients."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

CLIENTS = ["confluent-kafka", "kafka-python", "aiokafka"]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
Message = tuple[bytes | None, bytes]
Consumed = tuple[int, int, bytes | None, bytes]  # partition, offset, key, value


@dataclasses.dataclass(frozen=True)
class Security:
    """How a client connects: ``protocol`` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), the
    SASL mechanism and credentials, and the CA file that TLS checks the broker against."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = None
    cafile: str | None = None

    def settings(self, client: str) -> dict[str, Any]:
        """The client's own configuration for this (confluent-kafka's dotted names, the
        Python clients' keyword arguments)."""
        if client == "confluent-kafka":
            conf: dict[str, Any] = {"security.protocol": self.protocol}
            if self.mechanism:
                conf |= {"sasl.mechanism": self.mechanism, "sasl.username": self.username}
                conf["sasl.password"] = self.password
            if self.cafile:
                conf["ssl.ca.location"] = self.cafile
            return conf
        kw: dict[str, Any] = {"security_protocol": self.protocol}
        if self.mechanism:
            kw |= {"sasl_mechanism": self.mechanism, "sasl_plain_username": self.username}
            kw["sasl_plain_password"] = self.password
        if self.cafile and client == "kafka-python":
            kw["ssl_cafile"] = self.cafile
        elif self.cafile:
            from aiokafka.helpers import create_ssl_context

            kw["ssl_context"] = create_ssl_context(cafile=self.cafile)
        return kw


PLAINTEXT = Security()


def create_topic(
    client: str,
    bootstrap: str,
    topic: str,
    partitions: int,
    replication_factor: int = 1,
    security: Security = PLAINTEXT,
) -> None:
    sec = security.settings(client)
    if client == "confluent-kafka":
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap, **sec})  # must outlive the future
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)]
        )
        futures[topic].result(30)
    elif client == "kafka-python":
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **sec)
        try:
            admin.create_topics([NewTopic(topic, partitions, replication_factor)])
        finally:
            admin.close()
    else:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def go() -> None:
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **sec)
            await admin.start()
            try:
                await admin.create_topics([NewTopic(topic, partitions, replication_factor)])
            finally:
                await admin.close()

        asyncio.run(go())


def produce(
    client: str,
    bootstrap: str,
    topic: str,
    messages: Sequence[Message],
    acks: str,
    codec: str,
    security: Security = PLAINTEXT,
) -> None:
    """Produces and waits for every delivery; raises on a delivery error."""
    idempotent = acks == "all"
    sec = security.settings(client)
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
                **sec,
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
            **sec,
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
                **sec,
            )
            await p.start()
            try:
                futures = [await p.send(topic, key=key, value=value) for key, value in messages]
                await asyncio.gather(*futures)
            finally:
                await p.stop()

        asyncio.run(go())


def consume(
    client: str,
    bootstrap: str,
    topic: str,
    partitions: int,
    expected: int,
    timeout: float = 60,
    security: Security = PLAINTEXT,
) -> list[Consumed]:
    """Reads every partition from the beginning with assign/seek until `expected` messages
    arrived (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    sec = security.settings(client)
    out: list[Consumed] = []
    if client == "confluent-kafka":
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "assign-only", "enable.auto.commit": False, **sec}
        )
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

        c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **sec)
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
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **sec)
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


def consume_in_group(
    client: str,
    bootstrap: str,
    topic: str,
    group: str,
    expected: int,
    timeout: float = 60,
    security: Security = PLAINTEXT,
) -> tuple[list[Consumed], dict[int, int]]:
    """Joins ``group`` subscribed to ``topic``, reads from the earliest offsets until
    ``expected`` messages arrived, commits, and reads the committed offsets back: (messages,
    {partition: committed offset})."""
    deadline = time.monotonic() + timeout
    sec = security.settings(client)
    out: list[Consumed] = []
    committed: dict[int, int] = {}
    if client == "confluent-kafka":
        from confluent_kafka import Consumer

        c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **sec,
            }
        )
        c.subscribe([topic])
        try:
            while len(out) < expected and time.monotonic() < deadline:
                for msg in c.consume(1000, 0.5):
                    assert not msg.error(), msg.error()
                    out.append((msg.partition(), msg.offset(), msg.key(), msg.value()))
            c.commit(asynchronous=False)
            committed = {tp.partition: tp.offset for tp in c.committed(c.assignment(), 30)}
        finally:
            c.close()
    elif client == "kafka-python":
        from kafka import KafkaConsumer

        c = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
            auto_offset_reset="earliest", **sec,
        )  # fmt: skip
        try:
            while len(out) < expected and time.monotonic() < deadline:
                for tp, msgs in c.poll(500, max_records=5000).items():
                    out += [(tp.partition, m.offset, m.key, m.value) for m in msgs]
            c.commit()
            committed = {tp.partition: c.committed(tp) for tp in c.assignment()}
        finally:
            c.close()
    else:
        from aiokafka import AIOKafkaConsumer

        async def go() -> None:
            c = AIOKafkaConsumer(
                topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                auto_offset_reset="earliest", **sec,
            )  # fmt: skip
            await c.start()
            try:
                while len(out) < expected and time.monotonic() < deadline:
                    batches = await c.getmany(timeout_ms=500, max_records=5000)
                    for tp, msgs in batches.items():
                        out.extend((tp.partition, m.offset, m.key, m.value) for m in msgs)
                await c.commit()
                for tp in c.assignment():
                    committed[tp.partition] = await c.committed(tp)
            finally:
                await c.stop()

        asyncio.run(go())
    return out, committed
