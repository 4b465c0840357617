"""Three brokers on one machine, coordinated through a real etcd, measured with librdkafka
(confluent-kafka):

    python -m benches.cluster [--engine rust|python] [--smoke] [--json .benchmarks/cluster.json]

- produce throughput, acks=all to a topic with replication factor 3, against acks=1 to a
  topic with replication factor 1, in the same run (the issue's target: >= 0.5); 400 000
  records (the pure-Python engine a tenth of that);
- follower catch-up: a follower stopped while records are produced, then restarted; MB/s
  from its restart until its copies equal its leaders' and it is back in every ISR;
- fetch from the leaders: a consumer reading the RF=3 topic back (msg/s);
- failover: an idempotent acks=all producer sends to one partition every 5 ms while its
  leader is SIGKILLed; seconds from the kill to the first acknowledgement of a record sent
  after it (so acknowledged by the new leader), client metadata refresh included (the
  issue's target: within the broker session timeout + 0.5 s).

With ``--kafka``, Apache Kafka (three combined KRaft nodes from the jars in
``tools/kafka-jars``, with the same session timeout and ISR lag) is measured the same way
after tidelog, in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benches import kafka_cluster
from benches.broker import consume, produce
from benches.nodes import ProcessNodes
from tidelog.client.connection import Connection
from tidelog.cluster.local import EtcdProcess
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process

PARTITIONS = 6
SESSION_MS = 3000


def member_args(etcd: EtcdProcess, cluster: str, node: int, engine: str, log_level: str) -> list[str]:
    """``tidelog serve`` arguments for broker ``node`` of ``cluster`` on ``etcd``."""
    return [
        "--etcd",
        etcd.url,
        "--cluster-id",
        cluster,
        "--node-id",
        str(node),
        "--engine",
        engine,
        "--log-level",
        log_level,
    ]


class TidelogNodes(ProcessNodes):
    """Brokers 1..n of one tidelog cluster on ``etcd``, the same interface as
    ``benches.kafka_cluster.KafkaNodes``."""

    def __init__(
        self,
        root: Path,
        etcd: EtcdProcess,
        n: int,
        engine: str,
        log_level: str = "warning",
        log_files: list[Path] | None = None,
    ) -> None:
        self.root, self.etcd, self.engine, self.log_level = root, etcd, engine, log_level
        self.log_files = log_files  # broker n's stderr appended to log_files[n - 1]
        self.cluster = uuid.uuid4().hex[:8]
        super().__init__(n)

    def start(self, node: int) -> None:
        log = open(self.log_files[node - 1], "a") if self.log_files else None  # noqa: SIM115
        self.procs[node], self.ports[node] = serve_process(
            self.root / f"b{node}",
            *member_args(self.etcd, self.cluster, node, self.engine, self.log_level),
            "--set",
            f"broker.session.timeout.ms={SESSION_MS}",
            "--set",
            f"replica.lag.time.max.ms={SESSION_MS}",
            stderr=log.fileno() if log else None,
        )
        if log:
            log.close()  # the broker has its own copy


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def brokers_seen(bootstrap: str) -> int:
    """How many brokers the cluster's metadata lists (0 while none answers)."""
    try:
        return len(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=5).brokers)
    except KafkaException:  # a JVM still starting refuses connections
        return 0


def isr_sizes(port: int, topic: str) -> list[int]:
    with Connection(f"127.0.0.1:{port}") as conn:
        T = m.MetadataRequest.MetadataRequestTopic
        meta = conn.send(m.MetadataRequest(topics=[T(name=topic)]), 12)
        return [len(p.isr_nodes) for p in meta.topics[0].partitions]


def log_size(root: Path, node: int, topic: str) -> int:
    return sum(f.stat().st_size for f in (root / f"b{node}").glob(f"{topic}-*/*.log"))


def leader_of(port: int, topic: str, partition: int) -> int:
    with Connection(f"127.0.0.1:{port}") as conn:
        T = m.MetadataRequest.MetadataRequestTopic
        meta = conn.send(m.MetadataRequest(topics=[T(name=topic)]), 12)
        return int(meta.topics[0].partitions[partition].leader_id)


def failover_seconds(bootstrap: str, topic: str, kill: Callable[[], None]) -> float:
    """Seconds from ``kill()`` (the leader of ``topic``-0 SIGKILLed) to the first
    acknowledgement of a record produced after it."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 0})
    acked: list[tuple[float, float]] = []  # (sent, acknowledged), perf_counter seconds
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set():
            sent = time.perf_counter()

            def delivered(err: object, _msg: object, sent: float = sent) -> None:
                if err is None:
                    acked.append((sent, time.perf_counter()))

            p.produce(topic, value=b"f", partition=0, on_delivery=delivered)
            p.poll(0.005)
        p.flush(60)

    t = threading.Thread(target=send)
    t.start()
    try:
        wait_for(lambda: len(acked) > 100, "acknowledgements before the kill")
        killed = time.perf_counter()
        kill()
        wait_for(lambda: any(s > killed for s, _ in acked), "an acknowledgement from the new leader", 60)
    finally:
        stop.set()
        t.join(90)
    return min(a for s, a in acked if s > killed) - killed


def measure(nodes: ProcessNodes, root: Path, n: int) -> dict[str, float]:
    """The module's measurements on three running ``nodes`` (their data under ``root``)."""
    results: dict[str, float] = {}
    ports = nodes.ports
    bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports.values())
    admin = AdminClient({"bootstrap.servers": bootstrap})
    wait_for(lambda: brokers_seen(bootstrap) == 3, "three brokers")
    for name, rf in (("rf1", 1), ("rf3", 3)):
        new = NewTopic(name, num_partitions=PARTITIONS, replication_factor=rf)
        admin.create_topics([new])[name].result(30)
    wait_for(lambda: min(isr_sizes(ports[1], "rf3"), default=0) == 3, "full ISRs")  # Kafka: none yet
    pid = nodes.pid(1)
    for topic, acks in (("rf1", "1"), ("rf3", "all")):  # warm-up: a JVM's JIT, every page cache
        produce(ports[1], topic, n // 4, 100, acks, pid)
    results["acks=1 RF=1 msg/s"], _ = produce(ports[1], "rf1", n, 100, "1", pid)
    results["acks=all RF=3 msg/s"], _ = produce(ports[1], "rf3", n, 100, "all", pid)
    results["acks=all RF=3 / acks=1 RF=1"] = results["acks=all RF=3 msg/s"] / results["acks=1 RF=1 msg/s"]

    results["fetch from leaders RF=3 msg/s"] = consume(ports[1], "rf3", PARTITIONS, n)

    nodes.stop(3)
    wait_for(lambda: max(isr_sizes(ports[1], "rf3")) < 3, "broker 3 out of the ISR")
    produce(ports[1], "rf3", n, 1000, "all", pid)
    behind = log_size(root, 1, "rf3") - log_size(root, 3, "rf3")  # every broker hosts rf3
    started = time.perf_counter()
    nodes.start(3)
    wait_for(lambda: min(isr_sizes(ports[1], "rf3")) == 3, "broker 3 back in every ISR")
    took = time.perf_counter() - started
    results["follower catch-up MB/s"] = behind / took / 1e6  # includes its start-up
    results["follower catch-up s"] = took

    victim = leader_of(ports[1], "rf3", 0)
    survivor = next(b for b in ports if b != victim)
    live = ",".join(f"127.0.0.1:{ports[b]}" for b in ports if b != victim)
    results["failover s (kill to first ack)"] = failover_seconds(live, "rf3", lambda: nodes.kill(victim))
    results["failover target s (session + 0.5)"] = SESSION_MS / 1000 + 0.5
    assert leader_of(ports[survivor], "rf3", 0) != victim
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="rust", help="tidelog's storage engine: rust or python")
    ap.add_argument("--kafka", action="store_true", help="also run Apache Kafka, after tidelog, the same way")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    n = 20_000 if args.smoke else 400_000
    if args.engine == "python":  # a tenth of the records, as benches.broker
        n //= 10
    runs: dict[str, dict[str, float]] = {}
    root = Path(tempfile.mkdtemp(prefix="tidelog-cluster-bench-"))
    with EtcdProcess(root / "etcd") as etcd, TidelogNodes(root / "tidelog", etcd, 3, args.engine) as nodes:
        runs[args.engine] = measure(nodes, root / "tidelog", n)
    if args.kafka:
        missing = kafka_cluster.available()
        if missing:
            raise SystemExit(missing)
        settings = {
            "broker.session.timeout.ms": str(SESSION_MS),
            "broker.heartbeat.interval.ms": str(SESSION_MS // 3),  # as tidelog's lease keepalive
            "replica.lag.time.max.ms": str(SESSION_MS),
            "offsets.topic.replication.factor": "3",
        }
        with kafka_cluster.KafkaNodes(root / "kafka", 3, settings) as kafka:
            runs["kafka"] = measure(kafka, root / "kafka", n)
    shutil.rmtree(root, ignore_errors=True)
    for k in runs[args.engine]:
        print(f"{k:36s}" + "".join(f" {name}: {r[k]:>12,.2f}" for name, r in runs.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"engine": args.engine, "n": n, **runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
