"""Fault campaign on a three-broker cluster: faults at random moments under an idempotent
acks=all producer and a consumer group, then a check that nothing acknowledged was lost.

    python -m benches.cluster_campaign [--faults 200] [--seed 1] [--engines rust,python,rust]

Workload: a confluent-kafka idempotent producer (acks=all) writing sequence-numbered keyed
records to a topic with RF=3, ``min.insync.replicas=2`` and 6 partitions; a group of two
consumers committing what they read. Faults, one at a time, chosen at random: SIGKILL of a
partition's leader, SIGSTOP of a leader until its session has run out then SIGCONT, SIGKILL of the
controller, a cut link between a leader and one of its followers (through ``LinkProxy`` in
front of each broker's replication listener) until the leader has shrunk the ISR,
SIGKILL of every broker at once, and a restart of etcd. After each, the time until the
cluster has recovered (every broker registered, every partition led with its full ISR as
every broker sees it, and a record acknowledged since) is measured.

At the end: every acknowledged record is read back from the leaders exactly once, every
replica's log equals its leader's byte for byte, the group's acknowledged commits never went
backwards per partition, its coordinator answers none older and a new member starts
reading at them, and the producer's last records were all answered within its timeout. The
test suite runs a short campaign (tests/test_cluster_campaign.py); benches/README.md has a
long one's figures. Every broker serves ``/metrics``, scraped five times a second through
the faults, so the per-request metrics and the idleness instrument run through them too.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benches.cluster import member_args, wait_for
from benches.link_proxy import LinkProxy
from benches.metrics import Scraper
from benches.nodes import ProcessNodes
from tidelog.client.connection import Connection
from tidelog.cluster.local import EtcdProcess, free_port
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process

TOPIC = "campaign"
GROUP = "campaign-readers"
PARTITIONS = 6
SESSION_MS = 2000
LAG_MS = 2000
RECOVERY_TIMEOUT = 90.0
FAULTS = ("kill_leader", "pause_leader", "kill_controller", "cut_link", "kill_all", "restart_etcd")


@dataclass
class Outcome:
    faults: dict[str, int] = field(default_factory=dict)
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    delivery_errors: int = 0
    unflushed: int = 0
    commits: int = 0
    commits_backwards: int = 0
    committed_behind: int = 0
    resumed_elsewhere: int = 0
    replicas_differ: int = 0
    scrapes: int = 0
    recovery_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        del out["recovery_s"]
        r = sorted(self.recovery_s)
        out["recovery p50 s"] = statistics.median(r) if r else 0.0
        out["recovery p99 s"] = r[min(len(r) - 1, int(len(r) * 0.99))] if r else 0.0
        out["recovery max s"] = r[-1] if r else 0.0
        return out


def ask(port: int, body: Any, version: int) -> Any:
    """One request to the broker on ``port``; None if it does not answer."""
    try:
        with Connection(f"127.0.0.1:{port}", timeout=5) as conn:
            return conn.send(body, version)
    except (OSError, EOFError, TimeoutError):
        return None


class CampaignNodes(ProcessNodes):
    """Three brokers with fixed ports, each with a client listener and a replication
    listener behind a ``LinkProxy`` (what followers are told to connect to)."""

    def __init__(
        self,
        root: Path,
        etcd: EtcdProcess,
        engines: tuple[str, ...],
        stack: ExitStack,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(len(engines))
        self.root, self.etcd, self.engines = root, etcd, engines
        self.settings = settings or {}  # broker settings over the campaign's
        self.cluster = uuid.uuid4().hex[:8]
        self.ports = {n: free_port() for n in self.ports}
        self.replication_ports = {n: free_port() for n in self.ports}
        self.metrics_ports = {n: free_port() for n in self.ports}
        self.proxies = {
            n: stack.enter_context(LinkProxy(self.replication_ports[n], free_port())) for n in self.ports
        }

    def start(self, node: int) -> None:
        """Starts broker ``node`` on its ports, once etcd has let a killed one's lease go (a
        broker whose id is still registered refuses to start)."""
        args = member_args(self.etcd, self.cluster, node, self.engines[node - 1], "warning")
        settings = {
            "listeners": f"CLIENT://127.0.0.1:{self.ports[node]},REPLICATION://127.0.0.1:{self.replication_ports[node]}",
            "advertised.listeners": f"REPLICATION://127.0.0.1:{self.proxies[node].port}",
            "listener.security.protocol.map": "CLIENT:PLAINTEXT,REPLICATION:PLAINTEXT",
            "inter.broker.listener.name": "REPLICATION",
            "broker.session.timeout.ms": str(SESSION_MS),
            "replica.lag.time.max.ms": str(LAG_MS),
            "min.insync.replicas": "2",
            "metrics.listen": f"127.0.0.1:{self.metrics_ports[node]}",
            **self.settings,
        }
        for k, v in settings.items():
            args += ["--set", f"{k}={v}"]
        log = open(self.root / f"b{node}.log", "a")  # noqa: SIM115 - the broker has its own copy
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        try:
            while True:
                try:
                    self.procs[node], _ = serve_process(
                        self.root / f"b{node}", *args, stderr=log.fileno(), port=self.ports[node]
                    )
                    return
                except RuntimeError:  # refused: the old registration has not lapsed yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            log.close()

    def create_topic(self) -> str:
        """Once every broker is registered, makes the campaign's topic; the bootstrap list."""
        wait_for(lambda: self.registered() == set(self.ports), "every broker registered", RECOVERY_TIMEOUT)
        bootstrap = ",".join(f"127.0.0.1:{p}" for p in self.ports.values())
        config = {"min.insync.replicas": "2"}
        new = NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=3, config=config)
        admin = AdminClient({"bootstrap.servers": bootstrap})  # kept until the result is in
        admin.create_topics([new])[TOPIC].result(30)
        return bootstrap

    def alive(self) -> list[int]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def topic(self, port: int, name: str = TOPIC) -> Any:
        """Topic ``name`` as the broker on ``port`` describes it (None: no answer)."""
        T = m.MetadataRequest.MetadataRequestTopic
        request = m.MetadataRequest(topics=[T(name=name)], allow_auto_topic_creation=False)  # only look
        meta = ask(port, request, 12)
        return meta.topics[0] if meta is not None and meta.topics else None

    def leader_of(self, name: str, partition: int) -> int:
        """The leader of ``name``-``partition`` as a live broker answers (-1: none known)."""
        t = self.topic(self.ports[self.alive()[0]], name)
        return int(t.partitions[partition].leader_id) if t is not None and not t.error_code else -1

    def registered(self, via: int = 1) -> set[int]:
        """The brokers registered, as broker ``via`` answers DescribeCluster (none: no answer)."""
        described = ask(self.ports[via], m.DescribeClusterRequest(), 1)
        return {b.broker_id for b in described.brokers} if described is not None else set()

    def healthy(self) -> bool:
        """Every broker registered, and every broker sees every partition led, with a full ISR."""
        for port in self.ports.values():
            described = ask(port, m.DescribeClusterRequest(), 1)
            if described is None or len(described.brokers) != len(self.ports):
                return False
            t = self.topic(port)
            if t is None or t.error_code or len(t.partitions) != PARTITIONS:
                return False
            if any(
                p.error_code or p.leader_id < 0 or len(p.isr_nodes) != len(self.ports) for p in t.partitions
            ):
                return False
        return True


def log_bytes(directory: Path) -> bytes:
    """A partition's log as one byte string: its segments in offset order (followers roll
    their segments where their own appends cross segment.bytes, so only the stream compares)."""
    return b"".join(p.read_bytes() for p in sorted(directory.glob("*.log")))


class Workload:
    """The producer and the group's two consumers, each in a thread."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.acked: dict[tuple[int, int], bytes] = {}
        self.errors: list[str] = []
        self.unflushed: list[int] = []
        self.commits: dict[int, list[tuple[float, int]]] = {p: [] for p in range(PARTITIONS)}
        self.stop_producing = threading.Event()
        self.stop_reading = threading.Event()
        self.threads = [threading.Thread(target=self.produce)] + [
            threading.Thread(target=self.read) for _ in range(2)
        ]

    def produce(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 120_000,
            }
        )

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                self.acked[(msg.partition(), msg.offset())] = msg.value()
            else:
                self.errors.append(str(err))

        i = 0
        while not self.stop_producing.is_set():
            producer.produce(TOPIC, key=b"k%d" % (i % 60), value=b"s%d" % i, on_delivery=delivered)
            producer.poll(0.002)
            i += 1
        self.unflushed.append(producer.flush(150))

    def read(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": GROUP,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([TOPIC])
        while not self.stop_reading.is_set():
            msgs = [msg for msg in consumer.consume(500, 0.2) if msg.error() is None]
            if not msgs:
                continue
            try:
                done = consumer.commit(asynchronous=False)
            except KafkaException:
                continue  # not acknowledged: the coordinator is moving, or the group rebalancing
            now = time.monotonic()
            for tp in done or []:
                if tp.error is None and tp.offset >= 0:
                    self.commits[tp.partition].append((now, tp.offset))
        consumer.close()

    def committed(self) -> bool:
        """Whether the group has had a commit acknowledged."""
        return any(self.commits.values())

    def __enter__(self) -> Workload:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_producing.set()
        self.threads[0].join(180)
        self.stop_reading.set()
        for t in self.threads[1:]:
            t.join(60)


class Campaign:
    def __init__(
        self, nodes: CampaignNodes, etcd: EtcdProcess, workload: Workload, rng: random.Random
    ) -> None:
        self.nodes, self.etcd, self.workload, self.rng = nodes, etcd, workload, rng

    def kill_leader(self) -> None:
        victim = self.nodes.leader_of(TOPIC, self.rng.randrange(PARTITIONS))
        self.nodes.kill(victim)
        self.nodes.start(victim)

    def pause_leader(self) -> None:
        """Paused until its session has run out (etcd dropped its registration), then resumed."""
        victim = self.nodes.leader_of(TOPIC, self.rng.randrange(PARTITIONS))
        other = next(n for n in self.nodes.ports if n != victim)

        def lapsed() -> bool:
            return victim not in self.nodes.registered(other)

        self.nodes.procs[victim].send_signal(signal.SIGSTOP)
        try:
            wait_for(lapsed, "its lease to lapse", RECOVERY_TIMEOUT)
        finally:
            self.nodes.procs[victim].send_signal(signal.SIGCONT)

    def kill_controller(self) -> None:
        described = ask(self.nodes.ports[self.nodes.alive()[0]], m.DescribeClusterRequest(), 1)
        victim = described.controller_id if described is not None else -1
        if victim in self.nodes.procs:
            self.nodes.kill(victim)
            self.nodes.start(victim)

    def cut_link(self) -> None:
        t = self.nodes.topic(self.nodes.ports[self.nodes.alive()[0]])
        p = t.partitions[self.rng.randrange(PARTITIONS)]
        follower = self.rng.choice([r for r in p.replica_nodes if r != p.leader_id])
        proxy = self.nodes.proxies[p.leader_id]

        def shrunk() -> bool:
            t = self.nodes.topic(self.nodes.ports[p.leader_id])
            return t is not None and follower not in t.partitions[p.partition_index].isr_nodes

        proxy.cut.add(follower)
        try:  # cut until the leader has taken the follower out of the ISR
            wait_for(shrunk, "the ISR to shrink", RECOVERY_TIMEOUT)
        finally:
            proxy.cut.discard(follower)

    def kill_all(self) -> None:
        for node in list(self.nodes.procs):
            self.nodes.procs[node].send_signal(signal.SIGKILL)
        for node in list(self.nodes.procs):
            self.nodes.procs[node].wait(30)
            self.nodes.start(node)

    def restart_etcd(self) -> None:
        self.etcd.stop()
        self.etcd.start()

    def run(self, faults: int, outcome: Outcome) -> None:
        """``faults`` faults, every kind once in each shuffled round of them, each at a random
        moment (once the cluster has recovered from the last and acknowledged 1-500 more)."""
        kinds: list[str] = []
        wait_for(self.workload.committed, "the group's first commit", RECOVERY_TIMEOUT)
        for _ in range(faults):
            if not kinds:
                kinds = self.rng.sample(FAULTS, len(FAULTS))
            wait_for(self.nodes.healthy, "a healthy cluster before the next fault", RECOVERY_TIMEOUT)
            # A random moment of the workload: after a random number of acknowledgements more.
            due = len(self.workload.acked) + self.rng.randint(1, 500)
            wait_for(lambda d=due: len(self.workload.acked) >= d, "records acknowledged", RECOVERY_TIMEOUT)
            kind = kinds.pop()
            outcome.faults[kind] = outcome.faults.get(kind, 0) + 1
            getattr(self, kind)()
            healed = time.monotonic()
            acked = len(self.workload.acked)
            wait_for(
                lambda a=acked: self.nodes.healthy() and len(self.workload.acked) > a,
                f"the cluster to recover from {kind}",
                RECOVERY_TIMEOUT,
            )
            outcome.recovery_s.append(time.monotonic() - healed)
            line = f"fault {len(outcome.recovery_s)}: {kind}, recovered in {outcome.recovery_s[-1]:.2f} s"
            print(line, file=sys.stderr, flush=True)


def check(nodes: CampaignNodes, workload: Workload, outcome: Outcome) -> None:
    """Everything acknowledged, read back from the leaders; replicas against their leaders;
    the group's commits."""
    wait_for(nodes.healthy, "a healthy cluster at the end", RECOVERY_TIMEOUT)
    bootstrap = workload.bootstrap
    acked = workload.acked
    outcome.acknowledged = len(acked)
    outcome.delivery_errors = len(workload.errors)
    outcome.unflushed = sum(workload.unflushed) if workload.unflushed else -1
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "campaign-audit", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got: dict[tuple[int, int], bytes] = {}
    unread = set(acked)
    deadline = time.monotonic() + 120
    while unread and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is None:
                got[(msg.partition(), msg.offset())] = msg.value()
                unread.discard((msg.partition(), msg.offset()))
    consumer.close()
    outcome.lost = sum(1 for k, v in acked.items() if got.get(k) != v)
    outcome.duplicated = sum(n - 1 for n in Counter(got.values()).values() if n > 1)
    for index in range(PARTITIONS):
        sequence = [int(v[1:]) for (p, _), v in sorted(got.items()) if p == index]
        outcome.out_of_order += sum(1 for a, b in itertools.pairwise(sequence) if b < a)
    t = nodes.topic(nodes.ports[1])
    for p in t.partitions:
        lead = nodes.root / f"b{p.leader_id}" / f"{TOPIC}-{p.partition_index}"
        for r in p.replica_nodes:
            copy = nodes.root / f"b{r}" / f"{TOPIC}-{p.partition_index}"

            def same(copy: Path = copy, lead: Path = lead) -> bool:
                return log_bytes(copy) == log_bytes(lead)

            try:
                wait_for(same, f"{copy} to equal its leader's log", 60)
            except TimeoutError:
                outcome.replicas_differ += 1
    for offsets in workload.commits.values():
        ordered = [o for _, o in sorted(offsets)]
        outcome.commits += len(ordered)
        outcome.commits_backwards += sum(1 for a, b in itertools.pairwise(ordered) if b < a)
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        final = reader.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=30)
    finally:
        reader.close()
    for tp in final:
        last = max(workload.commits[tp.partition], default=(0.0, -1001))[1]
        # A commit whose answer was lost with its coordinator may have been applied: the
        # group may be ahead of its last acknowledged commit, never behind it.
        outcome.committed_behind += int(tp.offset < last)
    outcome.resumed_elsewhere = resumed_elsewhere(bootstrap, {tp.partition: tp.offset for tp in final})


def resumed_elsewhere(bootstrap: str, committed: dict[int, int]) -> int:
    """How many partitions a new member of the group does not start reading at the committed
    offset (one more record is written to each first, so there is something to read)."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for p in range(PARTITIONS):
        producer.produce(TOPIC, value=b"after", partition=p)
    producer.flush(60)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False})
    consumer.subscribe([TOPIC])
    first: dict[int, int] = {}
    deadline = time.monotonic() + 60
    try:
        while len(first) < PARTITIONS and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.5):
                if msg.error() is None:
                    first.setdefault(msg.partition(), msg.offset())
    finally:
        consumer.close()
    return sum(1 for p, offset in committed.items() if offset >= 0 and first.get(p) != offset)


def run(root: Path, faults: int, seed: int, engines: tuple[str, ...] = ("rust", "python", "rust")) -> Outcome:
    """A campaign of ``faults`` faults (chosen with ``seed``) on brokers on ``engines``."""
    outcome = Outcome()
    with ExitStack() as stack:
        etcd = stack.enter_context(EtcdProcess(root / "etcd"))
        nodes = stack.enter_context(CampaignNodes(root, etcd, engines, stack))
        bootstrap = nodes.create_topic()
        with Workload(bootstrap) as workload, Scraper(list(nodes.metrics_ports.values()), 0.2) as scraper:
            Campaign(nodes, etcd, workload, random.Random(seed)).run(faults, outcome)
        outcome.scrapes = scraper.answered
        check(nodes, workload, outcome)
    return outcome


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--engines", default="rust,python,rust")
    ap.add_argument("--json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tidelog-cluster-campaign-"))
    started = time.monotonic()
    outcome = run(root, args.faults, args.seed, tuple(args.engines.split(",")))
    summary = {**outcome.summary(), "seconds": time.monotonic() - started, "data": str(root)}
    for k, v in summary.items():
        print(f"{k:22s} {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    bad = outcome.lost + outcome.duplicated + outcome.out_of_order + outcome.replicas_differ
    return 1 if bad + outcome.commits_backwards + outcome.committed_behind + outcome.resumed_elsewhere else 0


if __name__ == "__main__":
    raise SystemExit(main())
