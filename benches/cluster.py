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
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benches.broker import consume, produce
from tidelog.client.connection import Connection
from tidelog.cluster.local import EtcdProcess
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process

PARTITIONS = 6
SESSION_MS = 3000


def start(
    root: Path, etcd: EtcdProcess, cluster: str, node: int, engine: str
) -> tuple[subprocess.Popen[str], int]:
    return serve_process(
        root / f"b{node}",
        "--etcd",
        etcd.url,
        "--cluster-id",
        cluster,
        "--node-id",
        str(node),
        "--engine",
        engine,
        "--log-level",
        "warning",
        "--set",
        f"broker.session.timeout.ms={SESSION_MS}",
        "--set",
        "replica.lag.time.max.ms=3000",
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="rust")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    n = 20_000 if args.smoke else 400_000
    if args.engine == "python":  # a tenth of the records, as benches.broker
        n //= 10
    root = Path(tempfile.mkdtemp(prefix="tidelog-cluster-bench-"))
    cluster = uuid.uuid4().hex[:8]
    results: dict[str, float] = {}
    procs: dict[int, subprocess.Popen[str]] = {}
    with EtcdProcess(root / "etcd") as etcd:
        try:
            ports = {}
            for node in (1, 2, 3):
                procs[node], ports[node] = start(root, etcd, cluster, node, args.engine)
            bootstrap = ",".join(f"127.0.0.1:{p}" for p in ports.values())
            admin = AdminClient({"bootstrap.servers": bootstrap})
            wait_for(lambda: len(admin.list_topics(timeout=5).brokers) == 3, "three brokers")
            for name, rf in (("rf1", 1), ("rf3", 3)):
                admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=rf)])[
                    name
                ].result(30)
            pid = procs[1].pid
            results["acks=1 RF=1 msg/s"], _ = produce(ports[1], "rf1", n, 100, "1", pid)
            results["acks=all RF=3 msg/s"], _ = produce(ports[1], "rf3", n, 100, "all", pid)
            results["acks=all RF=3 / acks=1 RF=1"] = (
                results["acks=all RF=3 msg/s"] / results["acks=1 RF=1 msg/s"]
            )

            results["fetch from leaders RF=3 msg/s"] = consume(ports[1], "rf3", PARTITIONS, n)

            procs[3].terminate()
            procs[3].wait(30)
            wait_for(lambda: max(isr_sizes(ports[1], "rf3")) < 3, "broker 3 out of the ISR")
            produce(ports[1], "rf3", n, 1000, "all", pid)
            behind = log_size(root, 1, "rf3") - log_size(root, 3, "rf3")  # every broker hosts rf3
            started = time.perf_counter()
            procs[3], ports[3] = start(root, etcd, cluster, 3, args.engine)
            wait_for(lambda: min(isr_sizes(ports[1], "rf3")) == 3, "broker 3 back in every ISR")
            took = time.perf_counter() - started
            results["follower catch-up MB/s"] = behind / took / 1e6  # includes its start-up
            results["follower catch-up s"] = took

            wait_for(lambda: min(isr_sizes(ports[1], "rf3")) == 3, "full ISRs before the failover")
            victim = leader_of(ports[1], "rf3", 0)
            survivor = next(b for b in ports if b != victim)

            def kill() -> None:
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait(30)

            live = ",".join(f"127.0.0.1:{ports[b]}" for b in ports if b != victim)
            results["failover s (kill to first ack)"] = failover_seconds(live, "rf3", kill)
            results["failover target s (session + 0.5)"] = SESSION_MS / 1000 + 0.5
            del procs[victim]
            assert leader_of(ports[survivor], "rf3", 0) != victim
        finally:
            for p in procs.values():
                p.terminate()
                p.wait(30)
    shutil.rmtree(root, ignore_errors=True)
    for k, v in results.items():
        print(f"{args.engine:7s} {k:32s} {v:,.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"engine": args.engine, **results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
