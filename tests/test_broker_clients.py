"""Unmodified Kafka clients against a real broker on 127.0.0.1: admin, produce with every
acks mode and codec, consume with assign/seek; exactly once, in order, Java's placement."""

from __future__ import annotations

import pytest

from tidelog.partitioning import partition_for_key
from tidelog.pytest_plugin import start_broker

from .kafka_clients import CLIENTS, CODECS, consume, create_topic, produce

PARTITIONS = 4


def check_delivery(sent: list[tuple[bytes, bytes]], got: list[tuple[int, int, bytes | None, bytes]]) -> None:
    assert len(got) == len(sent)
    assert sorted(v for _, _, _, v in got) == sorted(v for _, v in sent)  # each exactly once
    for key, _ in sent[:50]:
        assert key is not None
    by_partition: dict[int, list[tuple[int, bytes]]] = {}
    for partition, offset, key, value in got:
        assert key is not None and partition == partition_for_key(key, PARTITIONS)  # Java's murmur2
        by_partition.setdefault(partition, []).append((offset, value))
    for partition, items in by_partition.items():
        offsets = [o for o, _ in items]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        expected = [v for k, v in sent if partition_for_key(k, PARTITIONS) == partition]
        assert [v for _, v in items] == expected  # produce order kept per partition


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", CLIENTS)
def test_keyed_produce_and_consume_every_acks_mode(tidelog_broker, client, codec):
    topic = f"orders-{client}-{codec}"
    create_topic(client, tidelog_broker.bootstrap, topic, PARTITIONS)
    sent = [(b"customer-%d" % (i % 701), b"order-%d-%s" % (i, codec.encode())) for i in range(10_000)]
    for acks, part in zip(("all", "1", "0"), (sent[:3334], sent[3334:6667], sent[6667:]), strict=True):
        produce(client, tidelog_broker.bootstrap, topic, part, acks, codec)
    got = consume(client, tidelog_broker.bootstrap, topic, PARTITIONS, expected=len(sent))
    check_delivery(sent, got)


@pytest.mark.parametrize("client", CLIENTS)
def test_pure_python_engine_broker(tmp_path, client):
    broker = start_broker(tmp_path / "py", engine="python")
    try:
        topic = f"py-{client}"
        create_topic(client, broker.bootstrap, topic, PARTITIONS)
        sent = [(b"k%d" % i, b"v%d" % i) for i in range(1500)]
        produce(client, broker.bootstrap, topic, sent, "all", "gzip")
        check_delivery(sent, consume(client, broker.bootstrap, topic, PARTITIONS, expected=len(sent)))
    finally:
        broker.stop()
