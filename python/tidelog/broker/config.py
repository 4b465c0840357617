"""Broker settings, named as Kafka's broker configs (``server.properties``)."""

from __future__ import annotations

import contextlib
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


#: Broker settings tidelog honours that are not fields of BrokerConfig, with their defaults
#: (Kafka's, where Kafka has the setting).
OTHER_DEFAULTS = {
    "offsets.topic.num.partitions": "50",
    "offsets.topic.segment.bytes": str(100 << 20),
    "offsets.retention.minutes": "10080",
    "group.initial.rebalance.delay.ms": "3000",
    "group.min.session.timeout.ms": "6000",
    "group.max.session.timeout.ms": "1800000",
    "tidelog.offsets.compact.bytes": str(64 << 20),
}


# Lock file, the active segment's .log/.index/.timeindex, and (pure-Python engine) the two
# index maps' own descriptors; older segments hold none.
DESCRIPTORS_PER_PARTITION = 6
RESERVED_DESCRIPTORS = 1024


def open_files_limit() -> int:
    """The process's soft RLIMIT_NOFILE (a large number where the platform has none)."""
    try:
        import resource
    except ImportError:  # Windows
        return 1 << 20
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_open_files_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit, as a broker holding many partitions
    needs; returns the soft limit in force."""
    try:
        import resource
    except ImportError:
        return open_files_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):  # macOS caps an unlimited hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return open_files_limit()


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
    #: ``tidelog.max.partitions``: partitions this broker may host; None: what the open-files
    #: limit allows (see ``partition_limit``).
    max_partitions: int | None = None
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
            "tidelog.max.partitions": ("max_partitions", int),
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

    def partition_limit(self) -> int:
        """``max_partitions``, else as many partitions as the soft open-files limit leaves
        room for, at ``DESCRIPTORS_PER_PARTITION`` each, with ``RESERVED_DESCRIPTORS`` kept
        for connections and the rest."""
        if self.max_partitions is not None:
            return self.max_partitions
        return max(0, (open_files_limit() - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_PARTITION)

    def setting(self, name: str) -> str:
        """One of ``OTHER_DEFAULTS``' settings: as configured, else its default."""
        return self.settings.get(name, OTHER_DEFAULTS[name])

    def described(self, port: int) -> dict[str, tuple[str | None, bool]]:
        """Every setting the broker honours: name -> (value in force, whether configured),
        for DescribeConfigs of the broker (``port``: the one listened on)."""
        advertised = f"PLAINTEXT://{self.advertised_host or self.host}:{self.advertised_port or port}"
        values: dict[str, Any] = {
            "node.id": self.node_id,
            "broker.id": self.node_id,
            "listeners": f"PLAINTEXT://{self.host}:{port}",
            "advertised.listeners": advertised,
            "log.dirs": self.data_dir,
            "num.partitions": self.num_partitions,
            "auto.create.topics.enable": self.auto_create_topics_enable,
            "socket.request.max.bytes": self.socket_request_max_bytes,
            "connections.max.idle.ms": self.connections_max_idle_ms,
            "log.retention.check.interval.ms": self.log_retention_check_interval_ms,
            "producer.id.expiration.ms": self.producer_id_expiration_ms,
            "tidelog.fetch.zero.copy": self.fetch_zero_copy,
            "tidelog.engine": self.engine or "auto",
            "tidelog.max.partitions": self.partition_limit(),
        }
        topic = self.log_config({}).to_kafka()
        values.update({broker: topic[key] for broker, key in TOPIC_DEFAULTS.items()})
        values["log.retention.bytes"] = topic["retention.bytes"]
        if values["log.flush.interval.messages"] is None:  # Kafka's default: Long.MAX_VALUE
            values["log.flush.interval.messages"] = (1 << 63) - 1
        values.update({name: self.setting(name) for name in OTHER_DEFAULTS})
        aliases = {"broker.id": "node.id", "log.dir": "log.dirs", "log.retention.hours": "log.retention.ms"}
        configured = set(self.settings) | {aliases[k] for k in self.settings if k in aliases}
        return {name: (_as_setting(v), name in configured) for name, v in sorted(values.items())}

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


def _as_setting(v: Any) -> str | None:
    """A value as Kafka writes it in configs (booleans in lower case)."""
    if v is None:
        return None
    return str(v).lower() if isinstance(v, bool) else str(v)
