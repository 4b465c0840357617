"""Where a failover's time goes: the leader of one partition of an RF=3 topic is SIGKILLed
while an idempotent acks=all producer sends to it every 5 ms, several times over, and each
trial is cut into its steps from the brokers' own log lines:

    python -m benches.failover [--engine rust|python] [--trials 5] [--kafka]

- lease: from the kill to the controller seeing the broker gone (its etcd lease running out:
  at most the session timeout after its last renewal, plus etcd's expiry check);
- election: from there to the controller's transaction naming the new leader;
- takeover: from there to the new leader taking the partition (its watch, its image);
- client: from there to the first acknowledgement of a record sent after the kill
  (librdkafka's retry backoff and metadata refresh).

The victim is restarted on its port between trials. With ``--kafka``, Apache Kafka (three
KRaft nodes, the same session timeout) is killed the same way for the total, in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from benches import kafka_cluster
from benches.cluster import (
    SESSION_MS,
    TidelogNodes,
    brokers_seen,
    failover_seconds,
    isr_sizes,
    leader_of,
    wait_for,
)
from benches.nodes import ProcessNodes
from tidelog.cluster.local import EtcdProcess

TOPIC = "failover"
STEPS = ("lease", "election", "takeover", "client")


def stamp(line: str) -> float | None:
    """The wall-clock time of a broker log line (its logging format's local time)."""
    try:
        return datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return None


def first(logs: list[Path], pattern: str, after: float) -> float:
    """The time of the first line after ``after`` in any of ``logs`` that matches ``pattern``."""
    found = [
        t
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if (t := stamp(line)) is not None and t >= after and re.search(pattern, line)
    ]
    if not found:
        raise RuntimeError(f"no log line matching {pattern!r}")
    return min(found)


def ready(ports: dict[int, int]) -> bool:
    try:
        return min(isr_sizes(ports[1], TOPIC), default=0) == 3 and min(isr_sizes(ports[2], TOPIC)) == 3
    except (OSError, IndexError, EOFError):
        return False


def trial(nodes: ProcessNodes) -> tuple[int, float, float]:
    """Kills the leader of partition 0 under a producer; (victim, wall-clock kill time, seconds
    to the first acknowledgement of a record sent after the kill). Restarts the victim."""
    ports = nodes.ports
    wait_for(lambda: ready(ports), "full ISRs")
    victim = leader_of(ports[1], TOPIC, 0)
    live = ",".join(f"127.0.0.1:{ports[b]}" for b in ports if b != victim)
    killed = [0.0]

    def kill() -> None:
        killed[0] = time.time()
        nodes.kill(victim)

    took = failover_seconds(live, TOPIC, kill)
    nodes.start(victim)
    return victim, killed[0], took


def create(ports: dict[int, int]) -> None:
    admin = AdminClient({"bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in ports.values())})
    admin.create_topics([NewTopic(TOPIC, num_partitions=6, replication_factor=3)])[TOPIC].result(60)


def tidelog_trials(root: Path, engine: str, trials: int) -> list[dict[str, float]]:
    rows = []
    with EtcdProcess(root / "etcd") as etcd:
        logs = [root / f"b{n}.log" for n in (1, 2, 3)]
        with TidelogNodes(root, etcd, 3, engine, log_level="info", log_files=logs) as nodes:
            create(nodes.ports)
            for _ in range(trials):
                victim, killed, total = trial(nodes)
                # The controller sees the victim gone, or (the victim was the controller)
                # another broker takes the office.
                gone = first(logs, rf"broker\(s\) \[{victim}\] gone|broker \d+ is the controller", killed)
                elected = first(logs, rf"partition {TOPIC}/0: leader \d+, epoch", killed)
                led = first(logs, rf"{TOPIC}-0: leader at epoch", killed)
                steps = [gone - killed, elected - gone, led - elected, killed + total - led]
                rows.append({"total": total, **dict(zip(STEPS, steps, strict=True))})
    return rows


def kafka_trials(root: Path, trials: int) -> list[dict[str, float]]:
    settings = {
        "broker.session.timeout.ms": str(SESSION_MS),
        "broker.heartbeat.interval.ms": str(SESSION_MS // 3),
        "replica.lag.time.max.ms": str(SESSION_MS),
    }
    rows = []
    with kafka_cluster.KafkaNodes(root, 3, settings) as nodes:
        wait_for(lambda: brokers_seen(f"127.0.0.1:{nodes.ports[1]}") == 3, "three Kafka brokers")
        create(nodes.ports)
        for _ in range(trials):
            rows.append({"total": trial(nodes)[2]})
    return rows


def summary(name: str, rows: list[dict[str, float]]) -> None:
    for key in rows[0]:
        values = [r[key] for r in rows]
        print(
            f"{name:8s} {key:9s} p50 {statistics.median(values):5.2f} s   "
            f"max {max(values):5.2f} s   all {' '.join(f'{v:.2f}' for v in values)}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="rust")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--kafka", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tidelog-failover-"))
    summary(args.engine, tidelog_trials(root / "tidelog", args.engine, args.trials))
    if args.kafka:
        summary("kafka", kafka_trials(root / "kafka", args.trials))
    session = SESSION_MS / 1000
    print(f"session timeout {session:.1f} s; target: total <= {session + 0.5:.1f} s; logs in {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
