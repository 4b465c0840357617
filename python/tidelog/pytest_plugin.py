"""pytest plugin: the ``tidelog_broker`` fixture, an in-process broker on a free port of
127.0.0.1 with a fresh data directory, stopped (cleanly) after the test.

Installed with tidelog (entry point ``pytest11``); use it in any test::

    def test_produce(tidelog_broker):
        producer = KafkaProducer(bootstrap_servers=tidelog_broker.bootstrap)
"""

from __future__ import annotations

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


@pytest.fixture
def tidelog_broker(tmp_path: Path) -> Iterator[BrokerThread]:
    broker = start_broker(tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.stop()
