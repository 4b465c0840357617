"""Broker settings, named as Kafka's broker configs (``server.properties``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tidelog.storage.config import LogConfig

#: Kafka broker setting -> topic-level setting it supplies the default of.
TOPIC_DEFAULTS = {
    "log.segment.bytes": "segment.bytes",
    "log.roll.ms": "segment.ms",
    "log.retention.ms": "retention.ms",
    "log.retention.bytes": "retention.bytes",
    "log.flush.interval.messages": "flush.messages",
    "log.flush.interval.ms": "flush.ms",
    "message.max.bytes": "max.message.bytes",
    "log.message.timestamp.type": "message.timestamp.type",
    "log.index.interval.bytes": "index.interval.bytes",
    "log.index.size.max.bytes": "segment.index.bytes",
}


@dataclasses.dataclass
class BrokerConfig:
    """What the broker honours. ``settings`` holds Kafka-named values from ``--config``."""

    node_id: int = 0
    host: str = "127.0.0.1"
    port: int = 9092
    advertised_host: str | None = None
    advertised_port: int | None = None
    data_dir: str = "./tidelog-data"
    engine: str | None = None
    num_partitions: int = 1
    auto_create_topics_enable: bool = True
    socket_request_max_bytes: int = 100 * 1024 * 1024
    connections_max_idle_ms: int = 600_000
    log_retention_ms: int = 168 * 3600 * 1000
    log_retention_check_interval_ms: int = 300_000
    #: ``producer.id.expiration.ms``: idle idempotent producers are forgotten after this.
    producer_id_expiration_ms: int = 86_400_000
    #: ``tidelog.fetch.zero.copy``: send fetched records with sendfile (false: copy them).
    fetch_zero_copy: bool = True
    settings: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_properties(cls, path: str | Path, **overrides: Any) -> BrokerConfig:
        """Reads a Kafka-style ``key=value`` properties file."""
        props: dict[str, str] = {}
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "!")):
                key, _, value = line.partition("=")
                props[key.strip()] = value.strip()
        return cls.from_settings(props, **overrides)

    @classmethod
    def from_settings(cls, props: Mapping[str, str], **overrides: Any) -> BrokerConfig:
        c = cls(settings=dict(props))
        simple: dict[str, tuple[str, Callable[[str], Any]]] = {
            "node.id": ("node_id", int),
            "broker.id": ("node_id", int),
            "log.dirs": ("data_dir", str),
            "log.dir": ("data_dir", str),
            "num.partitions": ("num_partitions", int),
            "auto.create.topics.enable": ("auto_create_topics_enable", lambda v: v.lower() == "true"),
            "socket.request.max.bytes": ("socket_request_max_bytes", int),
            "connections.max.idle.ms": ("connections_max_idle_ms", int),
            "log.retention.ms": ("log_retention_ms", int),
            "log.retention.check.interval.ms": ("log_retention_check_interval_ms", int),
            "producer.id.expiration.ms": ("producer_id_expiration_ms", int),
            "tidelog.fetch.zero.copy": ("fetch_zero_copy", lambda v: v.lower() == "true"),
        }
        for key, value in props.items():
            if key in simple:
                attr, conv = simple[key]
                try:
                    setattr(c, attr, conv(value))
                except ValueError:
                    raise ValueError(f"invalid broker config {key}={value!r}") from None
            elif key == "log.retention.hours":
                c.log_retention_ms = int(value) * 3600 * 1000
            elif key == "listeners":
                host, _, port = value.split("://")[-1].rpartition(":")
                c.host, c.port = host or "0.0.0.0", int(port)
            elif key == "advertised.listeners":
                host, _, port = value.split("://")[-1].rpartition(":")
                c.advertised_host, c.advertised_port = host, int(port)
        for k, v in overrides.items():
            setattr(c, k, v)
        return c

    def topic_defaults(self) -> dict[str, Any]:
        """Kafka topic-config defaults this broker applies to new topics."""
        out: dict[str, Any] = {"retention.ms": self.log_retention_ms}
        for broker_key, topic_key in TOPIC_DEFAULTS.items():
            if broker_key in self.settings:
                out[topic_key] = self.settings[broker_key]
        return out

    def log_config(self, topic_configs: Mapping[str, Any]) -> LogConfig:
        merged = {**self.topic_defaults(), **topic_configs}
        merged.pop("cleanup.policy", None)
        return LogConfig.from_kafka(merged)
