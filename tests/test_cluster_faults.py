"""The cluster under single, chosen faults (issue 11), with each broker's replication listener
behind a ``LinkProxy`` (benches/link_proxy.py) so one follower's link to its leader can be
slowed or cut while both stay up; the random campaign is in test_cluster_campaign.py."""

from __future__ import annotations

import signal
import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from benches.cluster_campaign import (
    PARTITIONS,
    TOPIC,
    CampaignNodes,
    Outcome,
    Workload,
    ask,
    check,
    log_bytes,
)
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tidelog.cli._common import offsets
from tidelog.client.connection import Connection
from tidelog.protocol import _messages as m

from .cluster import needs_etcd
from .conftest import poll_until
from .wire import request_frame


def isr_of(nodes: CampaignNodes, topic: str, node: int) -> list[int]:
    t = nodes.topic(nodes.ports[node], topic)
    return sorted(t.partitions[0].isr_nodes) if t is not None and t.partitions else []


def high_watermark(nodes: CampaignNodes, topic: str) -> int:
    """Partition 0's high watermark as its leader answers ListOffsets (latest)."""
    leader = nodes.leader_of(topic, 0)
    with Connection(f"127.0.0.1:{nodes.ports[leader]}") as conn:
        return offsets(conn, topic, [0], -1)[0]


@needs_etcd
def test_a_slow_follower_leaves_the_isr_acks_all_goes_on_and_it_returns_once_caught_up(tmp_path: Path, etcd):
    """Broker 3's fetches from leader 1 held back 2.5 s each (replica.lag.time.max.ms 1.5 s)
    under a steady acks=all producer (min.insync.replicas=2): 3 leaves the ISR, records are
    still acknowledged while it is out, and the high watermark never moves backwards. With
    the link back to normal it catches up, rejoins, and its log equals the leader's. The
    leader SIGKILLed and restarted after that, the high watermark is still where it was."""
    lag = {"replica.lag.time.max.ms": "1500", "replica.fetch.wait.max.ms": "200"}
    with ExitStack() as stack:
        nodes = stack.enter_context(CampaignNodes(tmp_path, etcd, ("rust", "python", "rust"), stack, lag))
        bootstrap = ",".join(f"127.0.0.1:{p}" for p in nodes.ports.values())
        poll_until(lambda: nodes.registered() == {1, 2, 3}, "three brokers", 30)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        new = NewTopic(
            "slow", num_partitions=1, replica_assignment=[[1, 2, 3]], config={"min.insync.replicas": "2"}
        )
        admin.create_topics([new])["slow"].result(30)
        poll_until(lambda: isr_of(nodes, "slow", 1) == [1, 2, 3], "a full ISR", 30)

        acked: list[float] = []  # when each record was acknowledged
        stop = threading.Event()
        unflushed: list[int] = []

        def delivered(err: object, _msg: object) -> None:
            if err is None:
                acked.append(time.monotonic())

        def produce() -> None:
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
            while not stop.is_set():
                producer.produce("slow", value=b"x" * 100, on_delivery=delivered)
                producer.poll(0.005)
            unflushed.append(producer.flush(60))

        watermarks: list[int] = []  # the leader's, sampled all along

        def isr_is(expected: list[int]) -> bool:
            with Connection(f"127.0.0.1:{nodes.ports[1]}") as conn:
                watermarks.append(offsets(conn, "slow", [0], -1)[0])
            return isr_of(nodes, "slow", 1) == expected

        thread = threading.Thread(target=produce)
        thread.start()
        try:
            poll_until(lambda: len(acked) > 100, "records acknowledged", 30)
            nodes.proxies[1].delay[3] = 2.5
            poll_until(lambda: isr_is([1, 2]), "broker 3 out of the ISR", 30)
            out_at = time.monotonic()
            poll_until(
                lambda: isr_is([1, 2]) and sum(t > out_at for t in acked) > 100, "acks=all without 3", 30
            )
            del nodes.proxies[1].delay[3]
            poll_until(lambda: isr_is([1, 2, 3]), "broker 3 back in the ISR", 60)
        finally:
            stop.set()
            thread.join(90)
        assert unflushed == [0]
        assert watermarks == sorted(watermarks), "the high watermark moved backwards"
        assert watermarks[-1] > watermarks[0]
        lead = log_bytes(tmp_path / "b1" / "slow-0")
        poll_until(lambda: log_bytes(tmp_path / "b3" / "slow-0") == lead, "broker 3's copy", 30)
        # Across a crash: the leader SIGKILLed and restarted, the high watermark is where it was.
        final = high_watermark(nodes, "slow")
        assert final >= watermarks[-1]
        nodes.kill(1)
        nodes.start(1)
        poll_until(lambda: isr_of(nodes, "slow", 2) == [1, 2, 3], "broker 1 back in the ISR", 60)
        assert high_watermark(nodes, "slow") == final


def epochs(path: Path) -> dict[int, int]:
    """A replica's leader-epoch-checkpoint: epoch -> its start offset."""
    lines = path.read_text().split("\n")
    return {int(e): int(o) for e, o in (line.split() for line in lines[2:] if line.strip())}


def consistent(nodes: CampaignNodes, topics: dict[str, int]) -> bool:
    """Every broker knows each of ``topics`` (name: partitions) with all its partitions, or
    none knows it; each partition is led by a live broker in its ISR; and all brokers agree
    on each partition's leader epoch."""
    live = set(nodes.alive())
    seen: dict[tuple[str, int], set[int]] = {}
    for name, count in topics.items():
        known = []
        for node in live:
            t = nodes.topic(nodes.ports[node], name)
            if t is None:
                return False
            known.append(not t.error_code)
            if t.error_code:
                continue
            if len(t.partitions) != count:
                return False
            for p in t.partitions:
                if p.error_code or p.leader_id not in live or p.leader_id not in p.isr_nodes:
                    return False
                seen.setdefault((name, p.partition_index), set()).add(p.leader_epoch)
        if any(known) and not all(known):
            return False
    return all(len(e) == 1 for e in seen.values())


@needs_etcd
def test_killing_the_controller_mid_change_leaves_the_metadata_consistent(tmp_path: Path, etcd):
    """The controller SIGKILLed right after it was sent a CreateTopics; then together with a
    partition's leader (an election to make); then while a leader shrinks an ISR (one
    follower's link cut past replica.lag.time.max.ms). Each time another broker takes the
    office, and once the killed ones are back the metadata is consistent: the new topic has
    all its partitions or none, every partition a live leader in its ISR at one epoch, and
    every replica's leader epochs start where the others' do. Under it all an idempotent
    acks=all producer and a group lose nothing acknowledged."""
    lag = {"replica.lag.time.max.ms": "1500"}
    with ExitStack() as stack:
        nodes = stack.enter_context(CampaignNodes(tmp_path, etcd, ("rust", "python", "rust"), stack, lag))
        bootstrap = nodes.create_topic()

        def controller() -> int:
            described = ask(nodes.ports[nodes.alive()[0]], m.DescribeClusterRequest(), 1)
            return int(described.controller_id) if described is not None else -1

        def recovered() -> None:
            topics = {TOPIC: PARTITIONS, "made": 6}
            poll_until(lambda: nodes.healthy() and consistent(nodes, topics), "consistent metadata", 90)

        with Workload(bootstrap) as workload:
            poll_until(lambda: len(workload.acked) > 100, "records acknowledged", 30)
            poll_until(workload.committed, "the group's first commit", 60)
            victim = controller()
            C = m.CreateTopicsRequest
            made = C.CreatableTopic(name="made", num_partitions=6, replication_factor=3)
            create = C(topics=[made], timeout_ms=30_000)
            with socket.create_connection(("127.0.0.1", nodes.ports[victim])) as s:
                s.sendall(request_frame(create, 4, 1))
                nodes.kill(victim)
            nodes.start(victim)
            recovered()

            victim = controller()
            t = nodes.topic(nodes.ports[victim])
            leader = next(p.leader_id for p in t.partitions if p.leader_id != victim)
            for node in (victim, leader):
                nodes.procs[node].send_signal(signal.SIGKILL)
            for node in (victim, leader):
                nodes.procs[node].wait(30)
                nodes.start(node)
            recovered()

            victim = controller()
            t = nodes.topic(nodes.ports[victim])
            # Led by another broker if one leads any (the last round may have left every
            # leadership with the controller), the link cut from a broker other than both.
            p = min(t.partitions, key=lambda p: p.leader_id == victim)
            others = [r for r in p.replica_nodes if r != p.leader_id]
            follower = min(others, key=lambda r: r == victim)
            proxy = nodes.proxies[p.leader_id]
            refused = proxy.refused[follower]
            proxy.cut.add(follower)  # the ISR shrink is due 1.5 s after its last fetch
            poll_until(lambda: proxy.refused[follower] > refused, "the follower's link cut", 30)
            nodes.kill(victim)
            proxy.cut.discard(follower)
            nodes.start(victim)
            recovered()
        outcome = Outcome()
        check(nodes, workload, outcome)
        assert outcome.acknowledged > 100 and outcome.commits > 0, outcome.summary()
        bad = (outcome.lost, outcome.duplicated, outcome.out_of_order, outcome.replicas_differ)
        assert bad == (0, 0, 0, 0), outcome.summary()
        group = (outcome.commits_backwards, outcome.committed_behind, outcome.resumed_elsewhere)
        assert group == (0, 0, 0), outcome.summary()
        assert outcome.unflushed == 0
        for index in range(PARTITIONS):
            files = [tmp_path / f"b{n}" / f"{TOPIC}-{index}" / "leader-epoch-checkpoint" for n in nodes.ports]
            found = [epochs(f) for f in files]
            for a in found:
                for b in found:
                    assert all(b[e] == o for e, o in a.items() if e in b), (index, found)
