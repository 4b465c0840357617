"""pytest plugin: the ``tidelog_broker`` fixture, an in-process broker on a free port of
127.0.0.1 with a fresh data directory, stopped (cleanly) after the test.

Installed with tidelog (entry point ``pytest11``); use it in any test::

    def test_produce(tidelog_broker):
        producer = KafkaProducer(bootstrap_servers=tidelog_broker.bootstrap)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidelog.broker import Broker, BrokerConfig
from tidelog.broker.server import BrokerThread


def start_broker(data_dir: Path, engine: str | None = None, **settings: str) -> BrokerThread:
    """A broker on an OS-assigned port; ``settings`` are Kafka-named broker configs."""
    config = BrokerConfig.from_settings(
        settings, port=0, host="127.0.0.1", data_dir=str(data_dir), engine=engine
    )
    return Broker(config).run_in_thread()


def serve_process(
    data_dir: str | Path, *args: str, stderr: int | None = None, port: int = 0
) -> tuple[subprocess.Popen[str], int]:
    """Starts ``tidelog serve`` as its own process on ``port`` of 127.0.0.1 (0: a free one),
    with extra command-line ``args``; returns the process (stdout piped; stderr as given,
    inherited by default) once it listens, and its port. The caller stops it."""
    cmd = [sys.executable, "-m", "tidelog.cli", "serve", "--listen", f"127.0.0.1:{port}", "--data-dir"]
    proc = subprocess.Popen([*cmd, str(data_dir), *args], stdout=subprocess.PIPE, stderr=stderr, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(30)
        raise RuntimeError(f"tidelog serve exited with {proc.returncode}")
    return proc, int(line.strip().rsplit(":", 1)[1])


@pytest.fixture
def tidelog_broker(tmp_path: Path) -> Iterator[BrokerThread]:
    broker = start_broker(tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.stop()
