"""Broker settings, named as Kafka's broker configs (``server.properties``)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tidelog.protocol.security import ClientSecurity
from tidelog.storage.config import LogConfig


def _bool(v: str) -> bool:
    if v.lower() not in ("true", "false"):
        raise ValueError(f"{v!r} is not true or false")
    return v.lower() == "true"


#: Kafka's default ``listener.security.protocol.map``: each protocol's name names a listener.
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: The protocols whose listeners authenticate clients with SASL, and those wrapped in TLS.
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One listener: its name (``listeners``), address and security protocol (by
    ``listener.security.protocol.map``)."""

    name: str
    host: str
    port: int
    security_protocol: str = "PLAINTEXT"

    def __str__(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


def _listeners(v: str) -> list[tuple[str, str, int]]:
    """``NAME://host:port,...`` (the name PLAINTEXT if left out) as [(name, host, port)];
    names must be unique, as Kafka requires."""
    out: list[tuple[str, str, int]] = []
    for item in v.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, address = item.partition("://")
        if not sep:
            name, address = "PLAINTEXT", item
        host, colon, port = address.rpartition(":")
        if not colon or not name:
            raise ValueError(f"{item!r} is not NAME://host:port")
        if any(n == name.upper() for n, _, _ in out):
            raise ValueError(f"listener name {name} appears twice")
        out.append((name.upper(), host, int(port)))
    if not out:
        raise ValueError("no listener given")
    return out


def _protocol_map(v: str) -> dict[str, str]:
    """``NAME:PROTOCOL,...`` as {name: protocol}."""
    out = {}
    for item in v.split(","):
        name, colon, protocol = item.strip().partition(":")
        if not colon or protocol.upper() not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"{item!r} is not NAME:PROTOCOL with PROTOCOL one of {', '.join(SECURITY_PROTOCOLS)}"
            )
        out[name.upper()] = protocol.upper()
    return out


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(v: str) -> str:
        if v.lower() not in choices:
            raise ValueError(f"{v!r} is not one of {', '.join(choices)}")
        return v.lower()

    return parse


def sasl_mechanisms(v: str) -> list[str]:
    """``sasl.enabled.mechanisms`` as a list; ValueError naming one tidelog does not offer."""
    from tidelog.broker.sasl import MECHANISMS

    out = [x.strip().upper() for x in v.split(",") if x.strip()]
    unknown = [x for x in out if x not in MECHANISMS]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: tidelog offers only {', '.join(MECHANISMS)}")
    return out


def _per_listener_setting(key: str) -> str | None:
    """The setting a ``listener.name.<listener>.…`` key overrides for one listener (None for
    any other key, or one tidelog does not honour per listener)."""
    if not key.startswith(_LISTENER_PREFIX):
        return None
    _listener, _, rest = key[len(_LISTENER_PREFIX) :].partition(".")
    if rest in PER_LISTENER:
        return rest
    mechanism, _, name = rest.partition(".")
    from tidelog.broker.sasl import MECHANISMS

    return name if name in PER_MECHANISM and mechanism.upper() in MECHANISMS else None


def _optional_address(v: str) -> str:
    """``host:port``, or empty."""
    if v:
        _host, colon, port = v.rpartition(":")
        if not colon or not port.isdigit():
            raise ValueError(f"{v!r} is not host:port")
    return v


def _sasl_mechanism(v: str) -> str:
    """One SASL mechanism tidelog offers."""
    (mechanism,) = sasl_mechanisms(v) or [""]
    if not mechanism:
        raise ValueError("no SASL mechanism given")
    return mechanism


def _min_insync(v: str) -> int:
    n = int(v)
    if n < 1:
        raise ValueError(f"min.insync.replicas must be at least 1, not {n}")
    return n


#: Topic configs the broker applies itself, not the log: name -> the broker setting that
#: gives their default, and how they are parsed.
BROKER_TOPIC_CONFIGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "min.insync.replicas": ("min.insync.replicas", _min_insync),
    "unclean.leader.election.enable": ("unclean.leader.election.enable", _bool),
}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One broker setting, declared once, as Kafka's ``ConfigDef`` declares its settings:
    its Kafka name, a one-line doc, how its text value is parsed (raising ValueError when it
    is invalid), and where it goes. It goes to a ``BrokerConfig`` field (``field``; the
    default is the field's), or it is the default of a topic config (``topic``; the default is
    ``LogConfig``'s), or it is read where it is used (``BrokerConfig.setting``; ``default``)."""

    name: str
    doc: str
    parse: Callable[[str], Any] = str
    field: str | None = None
    topic: str | None = None
    default: str | None = None
    #: A secret (a password): DescribeConfigs and ``--help-config`` never show its value.
    sensitive: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("node.id", "this broker's id", int, field="node_id"),
    Setting(
        "listeners",
        "where to listen: NAME://host:port,... (port 0: any free port)",
        _listeners,
        field="listeners",
    ),
    Setting(
        "advertised.listeners",
        "NAME://host:port,...: the addresses clients are told to use, where not the listener's",
        _listeners,
        field="advertised_listeners",
    ),
    Setting(
        "listener.security.protocol.map",
        "NAME:PROTOCOL,...: each listener's security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)",
        _protocol_map,
        field="listener_security_protocol_map",
    ),
    Setting("log.dirs", "the data directory", field="data_dir"),
    Setting("num.partitions", "partitions of an auto-created topic", int, field="num_partitions"),
    Setting(
        "auto.create.topics.enable", "create topics on first use", _bool, field="auto_create_topics_enable"
    ),
    Setting("socket.request.max.bytes", "largest request accepted", int, field="socket_request_max_bytes"),
    Setting(
        "connections.max.idle.ms",
        "idle connections are closed after this",
        int,
        field="connections_max_idle_ms",
    ),
    Setting("log.retention.ms", "default retention.ms of topics", int, field="log_retention_ms"),
    Setting(
        "log.retention.check.interval.ms",
        "how often retention runs",
        int,
        field="log_retention_check_interval_ms",
    ),
    Setting("log.segment.bytes", "default segment.bytes of topics", int, topic="segment.bytes"),
    Setting("log.roll.ms", "default segment.ms of topics", int, topic="segment.ms"),
    Setting("log.retention.bytes", "default retention.bytes of topics", int, topic="retention.bytes"),
    Setting("log.flush.interval.messages", "default flush.messages of topics", int, topic="flush.messages"),
    Setting("log.flush.interval.ms", "default flush.ms of topics", int, topic="flush.ms"),
    Setting("message.max.bytes", "default max.message.bytes of topics", int, topic="max.message.bytes"),
    Setting(
        "log.message.timestamp.type",
        "default message.timestamp.type of topics",
        topic="message.timestamp.type",
    ),
    Setting(
        "log.index.interval.bytes",
        "default index.interval.bytes of topics",
        int,
        topic="index.interval.bytes",
    ),
    Setting(
        "log.index.size.max.bytes", "default segment.index.bytes of topics", int, topic="segment.index.bytes"
    ),
    Setting(
        "producer.id.expiration.ms",
        "idle idempotent producers are forgotten after this",
        int,
        field="producer_id_expiration_ms",
    ),
    Setting("offsets.topic.num.partitions", "partitions of __consumer_offsets", int, default="50"),
    Setting(
        "offsets.topic.segment.bytes", "segment.bytes of __consumer_offsets", int, default=str(100 << 20)
    ),
    Setting(
        "auto.leader.rebalance.enable",
        "the controller gives leaderships back to preferred replicas when too many are elsewhere",
        _bool,
        default="true",
    ),
    Setting(
        "leader.imbalance.check.interval.seconds",
        "how often the controller checks the preferred replicas' leaderships",
        int,
        default="300",
    ),
    Setting(
        "leader.imbalance.per.broker.percentage",
        "share of a broker's preferred partitions led elsewhere that starts a rebalance",
        int,
        default="10",
    ),
    Setting(
        "offsets.topic.replication.factor",
        "replication factor of __consumer_offsets (at most the brokers live when it is created)",
        int,
        default="3",
    ),
    Setting(
        "offsets.commit.timeout.ms",
        "an offset commit waits this long for every in-sync replica of its partition",
        int,
        default="5000",
    ),
    Setting(
        "offsets.retention.minutes",
        "committed offsets of empty groups expire after this",
        int,
        default="10080",
    ),
    Setting(
        "group.initial.rebalance.delay.ms",
        "wait for more members before a new group's first rebalance",
        int,
        default="3000",
    ),
    Setting("group.min.session.timeout.ms", "shortest session a member may ask for", int, default="6000"),
    Setting("group.max.session.timeout.ms", "longest session a member may ask for", int, default="1800000"),
    Setting(
        "tidelog.fetch.zero.copy",
        "send fetched records with sendfile (false: copy them)",
        _bool,
        field="fetch_zero_copy",
    ),
    Setting(
        "tidelog.etcd.endpoints",
        "etcd client URLs, comma-separated: the broker joins that cluster (empty: one broker on its own)",
        lambda v: [u.strip() for u in v.split(",") if u.strip()],
        field="etcd_endpoints",
    ),
    Setting("tidelog.cluster.id", "the cluster's name: its keys' prefix in etcd", field="cluster_name"),
    Setting(
        "broker.session.timeout.ms",
        "a broker whose etcd lease is not renewed for this long is fenced: it leads nothing",
        int,
        field="broker_session_timeout_ms",
    ),
    Setting(
        "tidelog.max.partitions",
        "partitions this broker may host (default: what the open-files limit allows)",
        int,
        field="max_partitions",
    ),
    Setting(
        "tidelog.offsets.compact.bytes",
        "__consumer_offsets partitions are compacted past this size",
        int,
        default=str(64 << 20),
    ),
    Setting(
        "tidelog.metadata.departed.broker.ms",
        "how long a broker that left the cluster stays in Metadata answers' broker list, so that"
        " clients move to its partitions' new leaders before they drop it",
        int,
        default="2000",
    ),
    Setting("tidelog.engine", "storage engine: auto, rust or python", field="engine"),
    Setting(
        "default.replication.factor", "replication factor of topics created without one", int, default="1"
    ),
    Setting(
        "min.insync.replicas",
        "default min.insync.replicas of topics: in-sync replicas an acks=all produce needs",
        _min_insync,
        default="1",
    ),
    Setting(
        "unclean.leader.election.enable",
        "default of topics: with no in-sync replica alive, elect an out-of-sync one (may lose data)",
        _bool,
        default="false",
    ),
    Setting(
        "replica.lag.time.max.ms",
        "a follower that has not caught up with its leader for this long leaves the ISR",
        int,
        default="30000",
    ),
    Setting("replica.fetch.wait.max.ms", "how long a follower's fetch waits for data", int, default="500"),
    Setting("replica.fetch.max.bytes", "bytes a follower asks for per partition", int, default=str(1 << 20)),
    Setting(
        "replica.fetch.backoff.ms", "how long a follower waits after a failed fetch", int, default="1000"
    ),
    Setting(
        "replica.high.watermark.checkpoint.interval.ms",
        "how often high watermarks are written to replication-offset-checkpoint",
        int,
        default="5000",
    ),
    Setting(
        "inter.broker.listener.name",
        "the listener followers fetch from (empty: the first listener)",
        default="",
    ),
    Setting("ssl.certificate.location", "PEM file of this broker's TLS certificate (chain)", default=""),
    Setting("ssl.key.location", "PEM file of the certificate's private key", default=""),
    Setting("ssl.key.password", "the private key's password, if it is encrypted", default="", sensitive=True),
    Setting(
        "ssl.ca.location",
        "PEM file of the certificate authorities that client certificates are checked against",
        default="",
    ),
    Setting(
        "ssl.client.auth",
        "none, requested or required: whether TLS clients present a certificate (the principal "
        "of an SSL listener's client is then User:<its subject>)",
        _one_of("none", "requested", "required"),
        default="none",
    ),
    Setting(
        "sasl.enabled.mechanisms",
        "the SASL mechanisms offered: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        sasl_mechanisms,
        default="SCRAM-SHA-256,SCRAM-SHA-512",
    ),
    Setting(
        "sasl.jaas.config",
        "PLAIN's users, as in a PlainLoginModule's JAAS text: user_<name>=\"<password>\" ...; "
        'its username="..." password="..." log this broker in to the others',
        default="",
        sensitive=True,
    ),
    Setting(
        "sasl.mechanism.inter.broker.protocol",
        "the mechanism followers log in to leaders with, when the inter-broker listener uses SASL",
        _sasl_mechanism,
        default="PLAIN",
    ),
    Setting(
        "connections.max.reauth.ms",
        "SASL sessions last this long; clients re-authenticate before, or are disconnected (0: forever)",
        int,
        default="0",
    ),
    Setting(
        "authorizer.class.name",
        "any value turns on tidelog's ACL authorizer (Kafka's StandardAuthorizer rules); empty: all allowed",
        default="",
    ),
    Setting(
        "super.users", "principals allowed everything, separated by ';' (User:admin;User:ops)", default=""
    ),
    Setting(
        "allow.everyone.if.no.acl.found",
        "with ACLs on: whether a resource no ACL names is open to everyone",
        _bool,
        default="false",
    ),
    Setting(
        "metrics.listen",
        "host:port where Prometheus metrics are served at /metrics (port 0: a free one; empty: off)",
        _optional_address,
        default="",
    ),
    Setting("quota.window.num", "samples a client quota's rate is measured over", int, default="11"),
    Setting("quota.window.size.seconds", "length of each quota sample", int, default="1"),
    Setting(
        "connection.failed.authentication.delay.ms",
        "a connection whose authentication failed is closed this long after the answer",
        int,
        default="100",
    ),
    Setting(
        "sasl.server.max.receive.size",
        "largest request accepted before a SASL client has authenticated",
        int,
        default="524288",
    ),
)
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
#: Settings one listener may have its own value of, as ``listener.name.<listener in lower
#: case>.<setting>`` (KIP-103).
PER_LISTENER = (
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.key.password",
    "ssl.ca.location",
    "ssl.client.auth",
    "sasl.enabled.mechanisms",
    "connections.max.reauth.ms",
)
#: Settings one SASL mechanism of a listener may have its own value of, as
#: ``listener.name.<listener>.<mechanism in lower case>.<setting>``: PLAIN's users are
#: ``listener.name.<l>.plain.sasl.jaas.config``.
PER_MECHANISM = ("sasl.jaas.config", "connections.max.reauth.ms")
_LISTENER_PREFIX = "listener.name."
#: Other names Kafka accepts for a setting, and the factor to its unit.
ALIASES = {
    "broker.id": ("node.id", 1),
    "log.dir": ("log.dirs", 1),
    "log.retention.hours": ("log.retention.ms", 3_600_000),
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
    #: The first listener's address (``listeners``' first entry sets them; ``host=``/``port=``
    #: overrides move it).
    host: str = "127.0.0.1"
    port: int = 9092
    #: ``listeners`` as (name, host, port); the first one's address is ``host``/``port``.
    listeners: list[tuple[str, str, int]] = dataclasses.field(default_factory=lambda: [("PLAINTEXT", "", 0)])
    advertised_listeners: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    listener_security_protocol_map: dict[str, str] = dataclasses.field(
        default_factory=lambda: {p: p for p in SECURITY_PROTOCOLS}
    )
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
    #: ``tidelog.etcd.endpoints``: the etcd cluster this broker joins; empty: it runs alone,
    #: its metadata in its data directory (``LocalController``).
    etcd_endpoints: list[str] = dataclasses.field(default_factory=list)
    cluster_name: str = "tidelog"
    broker_session_timeout_ms: int = 9000
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Names given in ``settings`` that tidelog does not know (warned about at start).
    unknown: list[str] = dataclasses.field(default_factory=list)

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
        """A config from Kafka-named settings (``SETTINGS``; the names in ``ALIASES`` too).
        A name tidelog does not know is kept in ``unknown`` for the broker to warn about."""
        c = cls(settings=dict(props))
        for key, value in props.items():
            name, factor = ALIASES.get(key, (key, 1))
            setting = SETTINGS_BY_NAME.get(_per_listener_setting(name) or name)
            if setting is None:
                c.unknown.append(key)
                continue
            try:
                parsed = setting.parse(value)
                if factor != 1:
                    parsed *= factor
            except ValueError as e:
                raise ValueError(f"invalid broker config {key}={value!r}: {e}") from None
            if setting.field is not None and setting.name == name:
                setattr(c, setting.field, parsed)
            if name == "listeners":
                c.host, c.port = parsed[0][1] or "0.0.0.0", parsed[0][2]
        for k, v in overrides.items():
            setattr(c, k, v)
        return c

    def endpoints(self) -> list[Endpoint]:
        """The listeners to open, the first at ``host``/``port``; ValueError for a name with
        no security protocol."""
        out = []
        for i, (name, host, port) in enumerate(self.listeners):
            if i == 0:
                host, port = self.host, self.port
            protocol = self.listener_security_protocol_map.get(name)
            if protocol is None:
                raise ValueError(
                    f"listener {name} has no security protocol in listener.security.protocol.map"
                )
            out.append(Endpoint(name, host or "0.0.0.0", port, protocol))
        return out

    def inter_broker_listener(self) -> str:
        """The listener followers fetch from: ``inter.broker.listener.name``, else the first."""
        return self.setting("inter.broker.listener.name") or self.listeners[0][0]

    def inter_broker_security(self) -> ClientSecurity:
        """How this broker connects to the others' inter-broker listener: its security
        protocol, ``sasl.mechanism.inter.broker.protocol`` with the ``username`` and
        ``password`` of that listener's JAAS config, TLS checked against its
        ``ssl.ca.location`` (with this broker's own certificate, for listeners that ask for
        one)."""
        name = self.inter_broker_listener()
        mechanism = self.setting("sasl.mechanism.inter.broker.protocol")
        return ClientSecurity.from_properties(
            {
                "security.protocol": self.listener_security_protocol_map.get(name, "PLAINTEXT"),
                "sasl.mechanism": mechanism,
                "sasl.jaas.config": self.listener_setting(name, "sasl.jaas.config", mechanism),
                **{
                    key: self.listener_setting(name, key)
                    for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")
                },
            }
        )

    def listener_setting(self, listener: str, name: str, mechanism: str | None = None) -> str:
        """Setting ``name`` as ``listener`` (and its SASL ``mechanism``) has it: the first set
        of ``listener.name.<listener>.<mechanism>.<name>`` (``PER_MECHANISM``),
        ``listener.name.<listener>.<name>`` (``PER_LISTENER``), and the broker's own."""
        prefix = f"{_LISTENER_PREFIX}{listener.lower()}."
        keys = [f"{prefix}{mechanism.lower()}.{name}"] if mechanism and name in PER_MECHANISM else []
        if name in PER_LISTENER:
            keys.append(prefix + name)
        for key in keys:
            if value := self.settings.get(key):
                return value
        return self.setting(name)

    def advertised(self, listener: str, bound: Endpoint) -> tuple[str, int]:
        """The address clients of ``listener`` are told to use: its ``advertised.listeners``
        entry, else where it is bound."""
        for name, host, port in self.advertised_listeners:
            if name == listener:
                return host or bound.host, port or bound.port
        return bound.host, bound.port

    def partition_limit(self) -> int:
        """``max_partitions``, else as many partitions as the soft open-files limit leaves
        room for, at ``DESCRIPTORS_PER_PARTITION`` each, with ``RESERVED_DESCRIPTORS`` kept
        for connections and the rest."""
        if self.max_partitions is not None:
            return self.max_partitions
        return max(0, (open_files_limit() - RESERVED_DESCRIPTORS) // DESCRIPTORS_PER_PARTITION)

    def setting(self, name: str) -> str:
        """A setting read where it is used (``Setting.default``): as configured, else its default."""
        default = SETTINGS_BY_NAME[name].default
        assert default is not None, f"{name} is a field or a topic default"
        return self.settings.get(name, default)

    def described(self, bound: list[Endpoint] | None = None) -> dict[str, tuple[str | None, bool]]:
        """Every setting of ``SETTINGS``: name -> (value in force, whether configured), for
        DescribeConfigs of the broker and ``--help-config`` (``bound``: the listeners as
        opened, with their ports; else as configured)."""
        topic = self.log_config({}).to_kafka()
        if topic["flush.messages"] is None:  # Kafka's default: Long.MAX_VALUE
            topic["flush.messages"] = (1 << 63) - 1
        if bound is None:
            bound = [Endpoint(n, h, p) for n, h, p in self.listeners]
            bound[0] = Endpoint(bound[0].name, self.host, self.port)
        advertised = [Endpoint(e.name, *self.advertised(e.name, e)) for e in bound]
        special: dict[str, Any] = {
            "listeners": ",".join(map(str, bound)),
            "advertised.listeners": ",".join(map(str, advertised)),
            "listener.security.protocol.map": ",".join(
                f"{k}:{v}" for k, v in self.listener_security_protocol_map.items()
            ),
            "tidelog.engine": self.engine or "auto",
            "tidelog.max.partitions": self.partition_limit(),
            "tidelog.etcd.endpoints": ",".join(self.etcd_endpoints),
        }
        configured = {ALIASES.get(k, (k, 1))[0] for k in self.settings}
        out: dict[str, tuple[str | None, bool]] = {}
        for s in SETTINGS:
            if s.name in special:
                value = special[s.name]
            elif s.field is not None:
                value = getattr(self, s.field)
            elif s.topic is not None:
                value = topic[s.topic]
            else:
                value = self.setting(s.name)
            out[s.name] = (None if s.sensitive else _as_setting(value), s.name in configured)
        out["broker.id"] = out["node.id"]
        return dict(sorted(out.items()))

    def help_table(self) -> str:
        """``tidelog serve --help-config``: every setting with its default and what it does."""
        rows = [
            f"{name}={value}\t{SETTINGS_BY_NAME[name].doc}"
            for name, (value, _) in self.described().items()
            if name in SETTINGS_BY_NAME
        ]
        return "\n".join(rows) + "\n"

    def topic_defaults(self) -> dict[str, Any]:
        """Kafka topic-config defaults this broker applies to new topics."""
        out: dict[str, Any] = {"retention.ms": self.log_retention_ms}
        for s in SETTINGS:
            if s.topic is not None and s.name in self.settings:
                out[s.topic] = self.settings[s.name]
        return out

    def effective_topic_configs(self, topic_configs: Mapping[str, str]) -> dict[str, Any]:
        """A topic's configs in force: its own, over this broker's defaults."""
        broker_applied = {name: self.setting(default) for name, (default, _) in BROKER_TOPIC_CONFIGS.items()}
        return {
            **self.log_config(topic_configs).to_kafka(),
            "cleanup.policy": "delete",
            **broker_applied,
            **topic_configs,
        }

    def log_config(self, topic_configs: Mapping[str, Any]) -> LogConfig:
        """The log settings of a topic with ``topic_configs``; ValueError if one is invalid
        (those the broker applies itself are checked here too)."""
        merged = {**self.topic_defaults(), **topic_configs}
        merged.pop("cleanup.policy", None)
        for name, (_, parse) in BROKER_TOPIC_CONFIGS.items():
            if name in merged:
                try:
                    parse(str(merged.pop(name)))
                except ValueError as e:
                    raise ValueError(f"invalid config {name}: {e}") from None
        return LogConfig.from_kafka(merged)

    def topic_setting(self, topic_configs: Mapping[str, str], name: str) -> Any:
        """A topic config the broker applies (``BROKER_TOPIC_CONFIGS``): the topic's own value,
        else the broker's default, parsed."""
        default, parse = BROKER_TOPIC_CONFIGS[name]
        return parse(topic_configs.get(name, self.setting(default)))


def is_sensitive(name: str) -> bool:
    """Whether the broker setting ``name`` is a secret, never shown."""
    setting = SETTINGS_BY_NAME.get(name)
    return setting is not None and setting.sensitive


def _as_setting(v: Any) -> str | None:
    """A value as Kafka writes it in configs (booleans in lower case)."""
    if v is None:
        return None
    return str(v).lower() if isinstance(v, bool) else str(v)
