"""Broker restarts: topics, configs and data survive a clean restart; SIGKILL during acks=all
production with flush-per-message loses no acknowledged message."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tidelog.pytest_plugin import serve_process, start_broker

from .kafka_clients import consume, create_topic, produce


def test_restart_keeps_topics_configs_and_data(tmp_path):
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    data = tmp_path / "data"
    broker = start_broker(data)
    try:
        create_topic("kafka-python", broker.bootstrap, "kept", 3)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        res = ConfigResource(
            "topic",
            "kept",
            incremental_configs=[
                ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
            ],
        )
        admin.incremental_alter_configs([res])[res].result(30)
        sent = [(b"k%d" % i, b"v%d" % i) for i in range(300)]
        produce("kafka-python", broker.bootstrap, "kept", sent, "all", "none")
    finally:
        broker.stop()
    broker = start_broker(data)
    try:
        got = consume("confluent-kafka", broker.bootstrap, "kept", 3, expected=300)
        assert sorted(v for *_, v in got) == sorted(v for _, v in sent)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        res = ConfigResource("topic", "kept")
        configs = admin.describe_configs([res])[res].result(30)
        assert configs["retention.ms"].value == "3600000"
    finally:
        broker.stop()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX-only")
def test_sigkill_during_acks_all_loses_no_acknowledged_message(tmp_path):
    from confluent_kafka import Producer

    data = tmp_path / "data"
    proc, port = serve_process(
        data, "--set", "log.flush.interval.messages=1", "--log-format", "json", stderr=subprocess.PIPE
    )
    try:
        bootstrap = f"127.0.0.1:{port}"
        create_topic("confluent-kafka", bootstrap, "durable", 2)
        acked: list[bytes] = []
        p = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 1,
                "message.timeout.ms": 5000,
                "partitioner": "murmur2_random",
            }
        )

        def on_delivery(err, msg):
            if err is None:
                acked.append(msg.value())

        i = 0
        deadline = time.monotonic() + 30
        while len(acked) < 2000 and time.monotonic() < deadline:
            p.produce("durable", key=b"k%d" % i, value=b"v%d" % i, on_delivery=on_delivery)
            p.poll(0)
            i += 1
            if i % 200 == 0:
                p.poll(0.05)
        assert len(acked) >= 2000, "the broker acknowledged too little before the deadline"
        proc.send_signal(signal.SIGKILL)  # mid-production: more requests are in flight
        proc.wait(30)
        assert proc.stderr is not None
        logged = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
        assert any("listening on" in doc["message"] for doc in logged)  # structured (JSON) logs
        p.flush(10)  # the rest fail or are acknowledged before the kill landed
        del p
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    broker = start_broker(data)
    try:
        got = {
            v
            for *_, v in consume(
                "kafka-python", broker.bootstrap, "durable", 2, expected=len(acked), timeout=30
            )
        }
        missing = [v for v in acked if v not in got]
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:3]}"
    finally:
        broker.stop()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)")
def test_kcat_produces_and_consumes(tidelog_broker, tmp_path):
    lines = "\n".join(f"key{i}:value{i}" for i in range(100)) + "\n"
    subprocess.run(
        ["kcat", "-b", tidelog_broker.bootstrap, "-P", "-t", "kc", "-K:"],
        input=lines,
        text=True,
        check=True,
        timeout=60,
    )
    out = subprocess.run(
        ["kcat", "-b", tidelog_broker.bootstrap, "-C", "-t", "kc", "-o", "beginning", "-e", "-f", "%k=%s\\n"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert sorted(out.stdout.split()) == sorted(f"key{i}=value{i}" for i in range(100))
    assert os.path.isdir(tmp_path / "broker" / "kc-0")  # auto-created, in Kafka's layout


def test_segment_rolls_under_load_keep_every_message(tmp_path):
    broker = start_broker(tmp_path / "data", **{"log.segment.bytes": "20000"})
    try:
        create_topic("confluent-kafka", broker.bootstrap, "rolling", 2)
        sent = [(b"k%d" % i, b"v%d" % i * 20) for i in range(3000)]
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "partitioner": "murmur2_random"})
        for i, (key, value) in enumerate(sent):
            p.produce("rolling", key=key, value=value)
            if i % 100 == 99:
                assert p.flush(30) == 0  # many separate batches, so the segments roll
        got = consume("confluent-kafka", broker.bootstrap, "rolling", 2, expected=len(sent))
        assert sorted(v for *_, v in got) == sorted(v for _, v in sent)
        segments = list((tmp_path / "data" / "rolling-0").glob("*.log"))
        assert len(segments) > 5  # rolled many times (in a worker thread, off the event loop)
    finally:
        broker.stop()
