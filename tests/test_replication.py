"""Partitions replicated between brokers (each its own ``tidelog serve --etcd`` process, a real
etcd, real clients): followers copy their leader with Kafka's follower fetch until their logs
are the leader's byte for byte, on either engine and with the two mixed; acks=all waits for
the ISR and honours min.insync.replicas; a follower that stops fetching leaves the ISR, and
one that catches up comes back."""

from __future__ import annotations

import random
import signal
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tidelog.broker.controller import TopicError, assign_replicas
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.records import build_batch

from .cluster import member, metadata, needs_etcd, registered
from .conftest import poll_until, stop_gracefully
from .wire import Wire


def test_replicas_are_placed_as_kafka_places_them():
    """Leaders round robin over the brokers, each partition's replicas distinct, followers
    spread as evenly as leaders; more replicas than brokers are refused."""
    brokers = [1, 2, 3, 4]
    placed = assign_replicas(brokers, 0, 12, 3, random.Random(7))
    assert all(len(set(r)) == 3 for r in placed)
    leaders = [r[0] for r in placed]
    assert sorted(leaders.count(b) for b in brokers) == [3, 3, 3, 3]
    hosted = [sum(b in r for r in placed) for b in brokers]
    assert hosted == [9, 9, 9, 9]
    with pytest.raises(TopicError) as e:
        assign_replicas(brokers, 0, 1, 5, random.Random(7))
    assert e.value.code == ec.INVALID_REPLICATION_FACTOR


def start_cluster(tmp_path: Path, etcd, engines: tuple[str, ...], *extra: str) -> tuple[str, dict, dict]:
    """Brokers 1..n (broker i on ``engines[i-1]``); (cluster id, processes, ports) once every
    broker sees all of them."""
    cluster = uuid.uuid4().hex[:8]
    procs, ports = {}, {}
    for i, engine in enumerate(engines, 1):
        procs[i], ports[i] = member(tmp_path, etcd, i, cluster, "--set", f"tidelog.engine={engine}", *extra)
    for port in ports.values():
        poll_until(
            lambda port=port: len(metadata(port).brokers) == len(engines), "every broker registered", 30
        )
    return cluster, procs, ports


def stop_all(procs: dict) -> None:
    for p in procs.values():
        if p.poll() is None:
            assert stop_gracefully(p) == 0


def partitions_of(port: int, topic: str) -> list:
    meta = metadata(port, topic)
    assert meta.topics[0].error_code == ec.NONE, meta.topics[0].error_code
    return sorted(meta.topics[0].partitions, key=lambda p: p.partition_index)


def log_bytes(directory: Path) -> bytes:
    """A partition's log as one byte string: its segments in offset order (followers roll
    their segments where their own appends cross segment.bytes, so only the stream compares)."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("*.log")))


@pytest.mark.parametrize(
    "engines",
    [("rust", "rust", "rust"), ("python", "python", "python"), ("rust", "python", "rust")],
    ids=["rust", "python", "mixed"],
)
@needs_etcd
def test_three_brokers_replicate_byte_for_byte(tmp_path, etcd, engines):
    """A topic with RF=3 made by confluent-kafka's admin client; 20,000 keyed records with
    acks=all and idempotence; read back from the leaders; every follower's log equals its
    leader's byte for byte."""
    _, procs, ports = start_cluster(tmp_path, etcd, engines)
    bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports.values())
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("copied", num_partitions=6, replication_factor=3)])["copied"].result(30)
        parts = partitions_of(ports[1], "copied")
        assert [len(p.replica_nodes) for p in parts] == [3] * 6
        assert sorted(p.leader_id for p in parts) == [1, 1, 2, 2, 3, 3]  # leaders spread
        producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )
        acked: list[tuple[int, int]] = []

        def delivered(err, msg):
            assert err is None, err
            acked.append((msg.partition(), msg.offset()))

        count = 20_000
        for i in range(count):
            producer.produce("copied", key=b"k%d" % (i % 97), value=b"v%d" % i, on_delivery=delivered)
            if i % 1000 == 0:
                producer.poll(0)
        assert producer.flush(60) == 0
        assert len(acked) == count
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "check", "auto.offset.reset": "earliest"}
        )
        consumer.subscribe(["copied"])
        got: dict[tuple[int, int], bytes] = {}
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got[(msg.partition(), msg.offset())] = msg.value()
        consumer.close()
        assert sorted(got) == sorted(acked)
        assert sorted(got.values()) == sorted(b"v%d" % i for i in range(count))
        for p in parts:
            lead = log_bytes(tmp_path / f"b{p.leader_id}" / f"copied-{p.partition_index}")
            assert lead
            for r in p.replica_nodes:
                follower = tmp_path / f"b{r}" / f"copied-{p.partition_index}"
                poll_until(lambda f=follower, lead=lead: log_bytes(f) == lead, f"broker {r}'s copy", 30)
    finally:
        stop_all(procs)


def produce_acks_all(port: int, topic: str, value: bytes, timeout_ms: int = 10_000, acks: int = -1) -> int:
    """One record to partition 0 over the wire; its error code."""
    P = m.ProduceRequest
    batch = build_batch([(None, value)], now_ms=int(time.time() * 1000))
    data = P.TopicProduceData.PartitionProduceData(index=0, records=batch)
    req = P(
        acks=acks, timeout_ms=timeout_ms, topic_data=[P.TopicProduceData(name=topic, partition_data=[data])]
    )
    w = Wire(f"127.0.0.1:{port}")
    try:
        return int(w.request(req, 9).responses[0].partition_responses[0].error_code)
    finally:
        w.close()


def isr(port: int, topic: str) -> list[int]:
    return sorted(partitions_of(port, topic)[0].isr_nodes)


@needs_etcd
def test_acks_all_waits_for_the_isr_and_honours_min_insync_replicas(tmp_path, etcd):
    """Partition led by broker 1 with replicas 1, 2, 3 (an explicit assignment) and
    min.insync.replicas=2. Broker 3 killed: it leaves the ISR after replica.lag.time.max.ms
    and acks=all goes on. Broker 2 killed too: acks=all gets NOT_ENOUGH_REPLICAS, acks=1 still
    works. Both back: the ISR is 1, 2, 3 again, and every acknowledged record is on each."""
    lag = "replica.lag.time.max.ms=1500"
    engines = ("rust", "python", "rust")
    cluster, procs, ports = start_cluster(tmp_path, etcd, engines, "--set", lag)
    try:
        C = m.CreateTopicsRequest
        topic = C.CreatableTopic(
            name="guarded",
            num_partitions=-1,
            replication_factor=-1,
            assignments=[
                C.CreatableTopic.CreatableReplicaAssignment(partition_index=0, broker_ids=[1, 2, 3])
            ],
            configs=[C.CreatableTopic.CreatableTopicConfig(name="min.insync.replicas", value="2")],
        )
        w = Wire(f"127.0.0.1:{ports[1]}")
        try:
            assert w.request(C(topics=[topic], timeout_ms=30_000), 5).topics[0].error_code == ec.NONE
        finally:
            w.close()
        assert partitions_of(ports[1], "guarded")[0].leader_id == 1
        acked = [b"first"]
        assert produce_acks_all(ports[1], "guarded", b"first") == ec.NONE

        procs[3].send_signal(signal.SIGKILL)
        procs[3].wait(30)
        # Answered once broker 3 is out of the ISR: the high watermark then passes the batch.
        assert produce_acks_all(ports[1], "guarded", b"without 3", timeout_ms=30_000) == ec.NONE
        acked.append(b"without 3")
        assert isr(ports[1], "guarded") == [1, 2]

        procs[2].send_signal(signal.SIGKILL)
        procs[2].wait(30)
        poll_until(lambda: isr(ports[1], "guarded") == [1], "broker 2 to leave the ISR", 30)
        assert produce_acks_all(ports[1], "guarded", b"refused") == ec.NOT_ENOUGH_REPLICAS
        assert produce_acks_all(ports[1], "guarded", b"acks=1", acks=1) == ec.NONE
        acked.append(b"acks=1")

        for i in (2, 3):
            poll_until(lambda i=i: not registered(etcd, cluster, i), f"broker {i}'s lease to lapse", 15)
            procs[i], ports[i] = member(
                tmp_path, etcd, i, cluster, "--set", f"tidelog.engine={engines[i - 1]}", "--set", lag
            )
        poll_until(lambda: isr(ports[1], "guarded") == [1, 2, 3], "the restarted followers in the ISR", 60)
        assert produce_acks_all(ports[1], "guarded", b"all back") == ec.NONE
        acked.append(b"all back")
        lead = log_bytes(tmp_path / "b1" / "guarded-0")
        for i in (2, 3):
            f = tmp_path / f"b{i}" / "guarded-0"
            poll_until(lambda f=f: log_bytes(f) == lead, f"broker {i}'s copy", 30)
        assert all(v in lead for v in acked)
        assert b"refused" not in lead
    finally:
        stop_all(procs)
    # Kafka's checkpoint files: the high watermark (every record acknowledged) and the
    # leader epochs, each broker's own.
    for i in (1, 2, 3):
        hw = (tmp_path / f"b{i}" / "replication-offset-checkpoint").read_text().splitlines()
        assert hw[:2] == ["0", "1"] and hw[2] == f"guarded 0 {len(acked)}"
        epochs = (tmp_path / f"b{i}" / "guarded-0" / "leader-epoch-checkpoint").read_text()
        assert epochs == "0\n1\n0 0\n"
