"""Three brokers on one machine, coordinated through a real etcd, measured with librdkafka
(confluent-kafka):

    python -m benches.cluster [--engine rust|python] [--smoke] [--json .benchmarks/cluster.json]

- produce throughput, acks=all to a topic with replication factor 3, against acks=1 to a
  topic with replication factor 1, in the same run (the issue's target: >= 0.5);
- follower catch-up: a follower stopped while records are produced, then restarted; MB/s
  from its restart until its copies equal its leaders' and it is back in every ISR.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from benches.broker import produce
from tidelog.client.connection import Connection
from tidelog.cluster.local import EtcdProcess
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process

PARTITIONS = 6


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
        "broker.session.timeout.ms=3000",
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="rust")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    n = 20_000 if args.smoke else 400_000
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
