"""Kafka's own `kafka-dump-log --verify-index-only` (DumpLogSegments, from Kafka's jars) finds
nothing wrong in the indexes of a broker that served the real clients: several clients and
codecs, rolled segments, committed offsets, an empty partition. Both engines."""

from __future__ import annotations

from pathlib import Path

from tidelog.pytest_plugin import start_broker

from .kafka_clients import CLIENTS, create_topic, produce
from .kafka_tools import run_java
from .test_broker_safety import commit


def test_kafka_dump_log_verifies_every_index(tmp_path: Path, engine: str) -> None:
    data = tmp_path / "b"
    broker = start_broker(data, engine, **{"log.segment.bytes": "30000", "offsets.topic.num.partitions": "2"})
    try:
        create_topic("confluent-kafka", broker.bootstrap, "empty", 2)
        for client, codec in zip(CLIENTS, ["none", "gzip", "zstd"], strict=True):
            create_topic(client, broker.bootstrap, f"t-{client}", 3)
            messages = [(b"k%d" % i, b"v%d" % i * 40) for i in range(1500)]
            produce(client, broker.bootstrap, f"t-{client}", messages, "all", codec)
            commit(broker.bootstrap, f"g-{client}", f"t-{client}", 700)
    finally:
        broker.stop()
    indexes = sorted(str(p) for p in data.glob("*-*/*index"))
    assert any(Path(p).stat().st_size for p in indexes if p.endswith(".index")), "no index entries"
    assert any("__consumer_offsets" in p for p in indexes)
    done = run_java(
        "org.apache.kafka.tools.DumpLogSegments", "--verify-index-only", "--files", ",".join(indexes)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    problems = [line for line in done.stderr.splitlines() if not line.startswith("SLF4J")]
    assert not problems, "\n".join(problems[:40])
    assert done.stdout.count("Dumping ") == len(indexes)
