"""Broker settings, declared once (``tidelog.broker.config.SETTINGS``): parsed and validated by
their Kafka names, aliases as Kafka accepts them, unknown names warned about, the caller's
config left alone, and the whole table printed by ``tidelog serve --help-config``."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from tidelog.broker import Broker, BrokerConfig
from tidelog.broker.config import SETTINGS


def test_settings_parse_by_kafka_name_with_aliases():
    c = BrokerConfig.from_settings(
        {
            "broker.id": "7",
            "log.retention.hours": "2",
            "auto.create.topics.enable": "FALSE",
            "listeners": "PLAINTEXT://0.0.0.0:9999,SSL://0.0.0.0:9998",
            "log.segment.bytes": "1048576",
        }
    )
    assert (c.node_id, c.log_retention_ms, c.auto_create_topics_enable) == (7, 2 * 3_600_000, False)
    assert (c.host, c.port) == ("0.0.0.0", 9999)
    assert c.log_config({}).segment_bytes == 1 << 20
    described = c.described()
    assert described["log.retention.ms"] == (str(2 * 3_600_000), True)
    assert described["node.id"] == ("7", True)
    assert described["num.partitions"] == ("1", False)


@pytest.mark.parametrize("key, value", [("num.partitions", "many"), ("auto.create.topics.enable", "yes")])
def test_an_invalid_value_is_refused_naming_the_setting(key, value):
    with pytest.raises(ValueError, match=key):
        BrokerConfig.from_settings({key: value})


def test_unknown_settings_are_warned_about_and_the_callers_config_is_left_alone(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="tidelog.broker")
    config = BrokerConfig.from_settings(
        {"no.such.setting": "1", "num.partitions": "3"}, data_dir=str(tmp_path)
    )
    broker = Broker(config, port=0, num_partitions=5)
    assert (config.port, config.num_partitions) == (9092, 3)
    assert (broker.config.port, broker.config.num_partitions) == (0, 5)
    warned = [r.getMessage() for r in caplog.records if "no.such.setting" in r.getMessage()]
    assert len(warned) == 1


def test_help_config_lists_every_setting():
    out = subprocess.run(
        [sys.executable, "-m", "tidelog.cli", "serve", "--help-config"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    listed = {line.split("=", 1)[0] for line in out.splitlines()}
    assert listed == {s.name for s in SETTINGS}
    assert "log.retention.ms=604800000\tdefault retention.ms of topics" in out.splitlines()


@pytest.mark.parametrize(
    "key, value",
    [
        ("sasl.enabled.mechanisms", "PLAIN,GSSAPI"),
        ("ssl.client.auth", "always"),
        ("listener.security.protocol.map", "A:TLS"),
    ],
)
def test_security_settings_are_checked(key, value):
    with pytest.raises(ValueError, match=key):
        BrokerConfig.from_settings({key: value})


def test_secrets_are_never_described_and_replication_needs_a_plaintext_listener(tmp_path):
    from tidelog.protocol import _messages as m
    from tidelog.pytest_plugin import start_broker

    from .wire import Wire

    jaas = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_a="hunter2";'
    c = BrokerConfig.from_settings({"sasl.jaas.config": jaas, "ssl.key.password": "p4ss"})
    assert c.described()["sasl.jaas.config"] == (None, True)
    assert c.described()["ssl.key.password"] == (None, True)
    broker = start_broker(tmp_path / "b", **{"sasl.jaas.config": jaas})
    try:
        D = m.DescribeConfigsRequest
        w = Wire(broker.bootstrap)
        r = w.request(
            D(
                resources=[
                    D.DescribeConfigsResource(resource_type=4, resource_name="0", configuration_keys=None)
                ]
            ),
            4,
        )
        described = {c.name: c for c in r.results[0].configs}
        assert described["sasl.jaas.config"].is_sensitive and described["sasl.jaas.config"].value is None
        assert not described["num.partitions"].is_sensitive
        assert "hunter2" not in repr(r)
    finally:
        broker.stop()
    replicating = BrokerConfig.from_settings(
        {
            "listeners": "SASL_SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
            "sasl.mechanism.inter.broker.protocol": "scram-sha-512",
            "sasl.jaas.config": jaas + ' username="broker" password="b-pw"',
            "ssl.ca.location": "/etc/ca.pem",
        }
    ).inter_broker_security()
    assert (replicating.protocol, replicating.mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (replicating.username, replicating.password, replicating.cafile) == (
        "broker",
        "b-pw",
        "/etc/ca.pem",
    )
    assert "b-pw" not in repr(replicating)
    with pytest.raises(ValueError, match=r"sasl\.mechanism\.inter\.broker\.protocol"):
        BrokerConfig.from_settings({"sasl.mechanism.inter.broker.protocol": "PLAIN,GSSAPI"})
