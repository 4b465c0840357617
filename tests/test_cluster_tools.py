"""The cluster as Kafka's own tools see it: Kafka's ``kafka-topics --describe`` (the Java
Admin client's describeTopics) and ``tidelog topics describe`` agree on every partition's
leader, replicas and ISR, and both tools and ``tidelog cluster status`` name the
under-replicated partitions."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from .cluster import metadata, needs_etcd, partitions_of, start_cluster, stop_all
from .conftest import poll_until
from .kafka_clients import create_topic

PARTITION_LINE = re.compile(r"Partition: (\d+)\s+Leader: (-?\d+)\s+Replicas: ([\d,]+)\s+Isr: ([\d,]*)")


def described(text: str) -> dict[int, tuple[int, str, str]]:
    """Each partition line of a ``--describe`` listing: {partition: (leader, replicas, isr)}."""
    return {int(p): (int(leader), replicas, isr) for p, leader, replicas, isr in PARTITION_LINE.findall(text)}


def tidelog(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tidelog.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_etcd
def test_kafka_topics_and_tidelog_describe_the_same_leaders_and_isr(tmp_path, etcd):
    """Three brokers, a topic with RF=3 made by kafka-python's admin client, then one broker
    SIGKILLed: once the controller has moved its leaderships and shrunk the ISRs, both tools
    show the same leaders, replicas and ISR, the dead broker leads nothing and is in no ISR,
    and every partition is reported under-replicated by both."""
    from .kafka_tools import run_java

    _, procs, ports = start_cluster(tmp_path, etcd, ("rust", "rust", "python"))
    try:
        bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports.values())
        create_topic("kafka-python", bootstrap, "described", 6, replication_factor=3)
        poll_until(lambda: len(metadata(ports[2], "described").topics[0].partitions) == 6, "the topic", 30)
        assert sorted(p.leader_id for p in partitions_of(ports[1], "described")) == [1, 1, 2, 2, 3, 3]
        procs[3].send_signal(signal.SIGKILL)
        procs[3].wait(30)

        def settled(port: int) -> bool:
            parts = partitions_of(port, "described")
            return all(p.leader_id in (1, 2) and 3 not in p.isr_nodes for p in parts)

        for port in (ports[1], ports[2]):
            poll_until(lambda port=port: settled(port), "broker 3's partitions moved", 30)
        live = f"127.0.0.1:{ports[1]},127.0.0.1:{ports[2]}"
        ours = described(tidelog("topics", "describe", "described", "--bootstrap-server", live))
        topic_command = "org.apache.kafka.tools.TopicCommand"
        done = run_java(topic_command, "--bootstrap-server", live, "--describe", "--topic", "described")
        assert done.returncode == 0, done.stderr[-3000:]
        kafkas = described(done.stdout)
        assert sorted(ours) == list(range(6)), ours
        assert kafkas == ours
        assert all("3" in replicas.split(",") for _, replicas, _ in ours.values())
        under = run_java(
            topic_command, "--bootstrap-server", live, "--describe", "--under-replicated-partitions"
        )
        assert under.returncode == 0, under.stderr[-3000:]
        assert sorted(described(under.stdout)) == list(range(6))
        status = tidelog("cluster", "status", "--bootstrap-server", live)
        assert sorted(re.findall(r"under-replicated: described-(\d+)", status)) == [str(i) for i in range(6)]
    finally:
        stop_all(procs)
