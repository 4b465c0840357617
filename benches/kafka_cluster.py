"""Apache Kafka as three combined (broker + controller) KRaft nodes on 127.0.0.1, from the jars
`tools/kafka-jars` fetches from Maven Central, for benchmarks that measure Kafka side by side
with tidelog in the same run."""

from __future__ import annotations

import base64
import subprocess
import uuid
from pathlib import Path

from benches.nodes import ProcessNodes
from tidelog.cluster.local import free_port

JARS = Path(__file__).resolve().parent.parent / "tools" / "kafka-jars" / "target" / "dependency"
HEAP = "-Xmx1g"


def available() -> str | None:
    """None when Kafka can run here, else what is missing."""
    if not any(JARS.glob("kafka_2.13-*.jar")):
        pom = JARS.parent.parent / "pom.xml"
        return f"Kafka's jars are missing: run `mvn -q -f {pom} dependency:copy-dependencies`"
    return None


class KafkaNodes(ProcessNodes):
    """Nodes 1..n of one KRaft cluster; each node keeps its ports across restarts, as a
    restarted Kafka broker does."""

    def __init__(self, root: Path, n: int, settings: dict[str, str]) -> None:
        super().__init__(n)
        self.root = root
        # KRaft's static voter list needs every port fixed before any node starts.
        self.ports = {node: free_port() for node in self.ports}
        self.controller_ports = {node: free_port() for node in self.ports}
        voters = ",".join(f"{node}@127.0.0.1:{p}" for node, p in self.controller_ports.items())
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        for node in self.ports:
            data = root / f"b{node}"
            props = {
                "process.roles": "broker,controller",
                "node.id": str(node),
                "controller.quorum.voters": voters,
                "listeners": f"PLAINTEXT://127.0.0.1:{self.ports[node]},CONTROLLER://127.0.0.1:{self.controller_ports[node]}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.ports[node]}",
                "controller.listener.names": "CONTROLLER",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                "inter.broker.listener.name": "PLAINTEXT",
                "log.dirs": str(data),
                "group.initial.rebalance.delay.ms": "0",
                **settings,
            }
            self.config(node).parent.mkdir(parents=True, exist_ok=True)
            self.config(node).write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            fmt = ["format", "-t", cluster_id, "-c", str(self.config(node))]
            subprocess.run(self.java("kafka.tools.StorageTool", *fmt), check=True, capture_output=True)

    def config(self, node: int) -> Path:
        return self.root / f"b{node}.properties"

    def java(self, *args: str) -> list[str]:
        return ["java", HEAP, "-cp", f"{JARS}/*", *args]

    def start(self, node: int) -> None:
        log = open(self.root / f"b{node}.out", "ab")  # noqa: SIM115 - the child process owns it
        self.procs[node] = subprocess.Popen(
            self.java("kafka.Kafka", str(self.config(node))), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
