"""What sharing a broker costs (issue 12), with librdkafka (confluent-kafka), on both engines:

    python -m benches.security [--smoke] [--json .benchmarks/security.json]

Per engine: one producer's and one consumer's throughput (100 B, 4 partitions, acks=1) over
PLAINTEXT (fetches by sendfile), SSL (TLS 1.3; fetches copied through TLS) and SASL_SSL
with SCRAM-SHA-512; the same over PLAINTEXT with the ACL authorizer on and 100 ACLs; and an
unlimited producer's throughput while a producer limited to 1 MB/s (``producer_byte_rate``)
runs beside it, against the same producer alone.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import trustme
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from benches.broker import both_engines, broker, consume, create, produce
from tidelog.client.connection import Connection
from tidelog.cluster.local import free_port
from tidelog.protocol import _messages as m


def tls_files(directory: Path) -> tuple[trustme.CA, Path, Path]:
    """A CA, and the broker's certificate (with its key) for 127.0.0.1 and localhost signed
    by it: (the CA, its PEM file, the certificate-and-key PEM file). Tests use it too."""
    ca = trustme.CA()
    ca_file, cert_file = directory / "ca.pem", directory / "broker.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    return ca, ca_file, cert_file


def acls_for_bench() -> list[AclBinding]:
    """100 ACLs: 96 for other users' topics (literal and prefixed), and the four that let
    the benchmark's clients (User:ANONYMOUS) create, write, read and commit."""
    allow, any_host = AclPermissionType.ALLOW, "*"
    out = [
        AclBinding(
            ResourceType.TOPIC,
            f"team{i}-",
            ResourcePatternType.PREFIXED if i % 2 else ResourcePatternType.LITERAL,
            f"User:user{i}",
            any_host,
            AclOperation.READ if i % 3 else AclOperation.WRITE,
            allow,
        )
        for i in range(96)
    ]
    me = "User:ANONYMOUS"
    out += [
        AclBinding(
            ResourceType.TOPIC, "t-acls-", ResourcePatternType.PREFIXED, me, any_host, AclOperation.ALL, allow
        ),
        AclBinding(
            ResourceType.GROUP, "*", ResourcePatternType.LITERAL, me, any_host, AclOperation.ALL, allow
        ),
        AclBinding(
            ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, me, any_host,
            AclOperation.CREATE, allow,
        ),
        AclBinding(
            ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, me, any_host,
            AclOperation.IDEMPOTENT_WRITE, allow,
        ),
    ]  # fmt: skip
    return out


#: A producer limited to 1 MB/s, as a process of its own (no GIL shared with the one
#: measured): it prints "throttled" once the broker throttles it, then produces until killed.
LIMITED_PRODUCER = """
import json, sys
from confluent_kafka import Producer
told = []
def stats(text):
    brokers = json.loads(text)["brokers"].values()
    if not told and any(b.get("throttle", {}).get("max", 0) > 0 for b in brokers):
        told.append(1)
        print("throttled", flush=True)
p = Producer({"bootstrap.servers": sys.argv[1], "client.id": "limited", "linger.ms": 5,
              "statistics.interval.ms": 200, "stats_cb": stats})
while True:
    try:
        p.produce("q-limited", b"z" * 1024)
    except BufferError:
        p.poll(0.05)
    p.poll(0)
"""


def produce_alongside(port: int, n: int, pid: int) -> tuple[float, float]:
    """(msg/s alone, msg/s beside a producer limited to 1 MB/s) of an unlimited producer,
    each the median of three runs, alternated; measured beside once the limited one is
    being throttled (past the burst its quota window allows at first)."""
    alone, beside = [], []
    limited = subprocess.Popen(
        [sys.executable, "-c", LIMITED_PRODUCER, f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True
    )
    assert limited.stdout is not None
    limited.send_signal(signal.SIGSTOP)
    try:
        for i in range(3):
            alone.append(produce(port, f"q-free-a{i}", n, 100, "1", pid, {"client.id": "free"})[0])
            limited.send_signal(signal.SIGCONT)
            if i == 0 and limited.stdout.readline().strip() != "throttled":
                raise RuntimeError("the limited producer was never throttled")
            beside.append(produce(port, f"q-free-b{i}", n, 100, "1", pid, {"client.id": "free"})[0])
            limited.send_signal(signal.SIGSTOP)
    finally:
        limited.kill()
        limited.wait(30)
    return statistics.median(alone), statistics.median(beside)


def produce_consume(name: str, port: int, n: int, pid: int, conf: dict[str, object]) -> dict[str, float]:
    """Produce and consume msg/s of ``n`` x 100 B (acks=1, 4 partitions), each the median of
    three runs: a new topic for each produce, a new consumer reading the first topic."""
    topics = [f"t-{name.split()[-1].lower()}-{i}" for i in range(3)]
    produced, consumed = [], []
    for topic in topics:
        create(port, topic, 4, conf)
        produced.append(produce(port, topic, n, 100, "1", pid, conf)[0])
        consumed.append(consume(port, topics[0], 4, n, conf))
    return {
        f"produce 100 B {name} (msg/s)": statistics.median(produced),
        f"consume 100 B {name} (msg/s)": statistics.median(consumed),
    }


def run(engine: str, smoke: bool) -> dict[str, float]:
    n = 2000 if smoke else (500_000 if engine == "rust" else 50_000)
    out: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="tidelog-bench-"))
    ca, cert = (str(path) for path in tls_files(tmp)[1:])
    ssl_port, sasl_port = free_port(), free_port()
    listeners = (
        f"listeners=PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:{ssl_port},SASL_SSL://127.0.0.1:{sasl_port}"
    )
    tls = {"security.protocol": "SSL", "ssl.ca.location": ca}
    scram = {
        **tls,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "bench",
        "sasl.password": "bench-pw",
    }
    with broker(
        engine, listeners, f"ssl.certificate.location={cert}", "sasl.enabled.mechanisms=SCRAM-SHA-512"
    ) as (proc, port, _):
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
        admin.alter_user_scram_credentials([UserScramCredentialUpsertion("bench", info, b"bench-pw")])[
            "bench"
        ].result(30)
        for name, p, conf in (
            ("over PLAINTEXT", port, {}),
            ("over SSL", ssl_port, tls),
            ("over SASL_SSL SCRAM-SHA-512", sasl_port, scram),
        ):
            out.update(produce_consume(name, p, n, proc.pid, conf))
    # The ACLs are made by a super user, then the broker restarts without one: the clients
    # measured are authorized by the ACLs themselves.
    data = str(tmp / "acl-broker")
    with broker(engine, "authorizer.class.name=tidelog", "super.users=User:ANONYMOUS", data=data) as (
        _,
        port,
        _,
    ):
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        for future in admin.create_acls(acls_for_bench()).values():
            future.result(30)
    with broker(engine, "authorizer.class.name=tidelog", data=data) as (proc, port, _):
        out.update(produce_consume("with 100 ACLs", port, n, proc.pid, {}))
    with broker(engine, "auto.create.topics.enable=true", "num.partitions=4") as (proc, port, _):
        A = m.AlterClientQuotasRequest
        with Connection(f"127.0.0.1:{port}") as conn:
            entry = A.EntryData(
                entity=[A.EntryData.EntityData(entity_type="client-id", entity_name="limited")],
                ops=[A.EntryData.OpData(key="producer_byte_rate", value=1_000_000.0, remove=False)],
            )
            assert conn.send(A(entries=[entry], validate_only=False)).entries[0].error_code == 0
        alone, beside = produce_alongside(port, n, proc.pid)
        out["produce 100 B alone (msg/s)"] = alone
        out["produce 100 B beside a 1 MB/s-limited producer (msg/s)"] = beside
    return out


RATIOS = (
    ("SSL / PLAINTEXT, produce", "produce 100 B over SSL (msg/s)", "produce 100 B over PLAINTEXT (msg/s)"),
    ("SSL / PLAINTEXT, consume", "consume 100 B over SSL (msg/s)", "consume 100 B over PLAINTEXT (msg/s)"),
    (
        "SASL_SSL / PLAINTEXT, produce",
        "produce 100 B over SASL_SSL SCRAM-SHA-512 (msg/s)",
        "produce 100 B over PLAINTEXT (msg/s)",
    ),
    (
        "100 ACLs / none, produce",
        "produce 100 B with 100 ACLs (msg/s)",
        "produce 100 B over PLAINTEXT (msg/s)",
    ),
    (
        "100 ACLs / none, consume",
        "consume 100 B with 100 ACLs (msg/s)",
        "consume 100 B over PLAINTEXT (msg/s)",
    ),
    (
        "beside a limited producer / alone",
        "produce 100 B beside a 1 MB/s-limited producer (msg/s)",
        "produce 100 B alone (msg/s)",
    ),
)


def main() -> int:
    results = both_engines(run)
    print("\n| ratio | rust | pure Python |")
    print("|---|---:|---:|")
    for name, top, bottom in RATIOS:
        cells = [results[e][top] / results[e][bottom] for e in ("rust", "python")]
        print(f"| {name} | {cells[0]:.2f} | {cells[1]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
