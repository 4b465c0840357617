"""Admin APIs as clients other than the usual Python ones use them: Metadata and DeleteTopics
by topic id (the Java admin client's `TopicCollection.ofTopicIds`), and the non-incremental
AlterConfigs (kafka-python's `alter_configs`, KafkaJS). A real broker over 127.0.0.1."""

from __future__ import annotations

import uuid
from pathlib import Path

from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import start_broker

from .kafka_clients import create_topic
from .wire import Wire


def metadata_by_id(w: Wire, *ids: uuid.UUID) -> list:  # type: ignore[type-arg]
    M = m.MetadataRequest
    req = M(
        topics=[M.MetadataRequestTopic(topic_id=i, name=None) for i in ids],
        allow_auto_topic_creation=True,
        include_topic_authorized_operations=False,
    )
    return list(w.request(req, 12).topics)


def test_metadata_and_delete_by_topic_id(tidelog_broker):
    create_topic("confluent-kafka", tidelog_broker.bootstrap, "by-id", 3)
    w = Wire(tidelog_broker.bootstrap)
    try:
        named = w.request(
            m.MetadataRequest(
                topics=[m.MetadataRequest.MetadataRequestTopic(name="by-id")],
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            ),
            12,
        ).topics[0]
        assert named.error_code == ec.NONE
        unknown = uuid.uuid4()
        found, missing = metadata_by_id(w, named.topic_id, unknown)
        assert (found.error_code, found.name, found.topic_id) == (ec.NONE, "by-id", named.topic_id)
        assert [p.partition_index for p in found.partitions] == [0, 1, 2]
        assert (missing.error_code, missing.name, missing.topic_id) == (ec.UNKNOWN_TOPIC_ID, None, unknown)

        D = m.DeleteTopicsRequest
        resp = w.request(
            D(
                topics=[D.DeleteTopicState(topic_id=unknown), D.DeleteTopicState(topic_id=named.topic_id)],
                timeout_ms=10_000,
            ),
            6,
        )
        by_id = {r.topic_id: r for r in resp.responses}
        assert by_id[unknown].error_code == ec.UNKNOWN_TOPIC_ID
        assert (by_id[named.topic_id].error_code, by_id[named.topic_id].name) == (ec.NONE, "by-id")
        (gone,) = metadata_by_id(w, named.topic_id)
        assert gone.error_code == ec.UNKNOWN_TOPIC_ID
    finally:
        w.close()


def describe(bootstrap: str, topic: str) -> dict[str, tuple[str, bool]]:
    """Each config's value and whether it was set on the topic (confluent-kafka's admin)."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource("topic", topic)
    entries = admin.describe_configs([res])[res].result(30)
    return {k: (e.value, e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value) for k, e in entries.items()}


def alter_legacy(w: Wire, topic: str, configs: dict[str, str]) -> int:
    A = m.AlterConfigsRequest
    req = A(
        resources=[
            A.AlterConfigsResource(
                resource_type=2,
                resource_name=topic,
                configs=[A.AlterConfigsResource.AlterableConfig(name=k, value=v) for k, v in configs.items()],
            )
        ],
        validate_only=False,
    )
    return int(w.request(req, 2).responses[0].error_code)


def test_alter_configs_replaces_the_topic_configs(tidelog_broker):
    """kafka-python's alter_configs over the legacy API, then the API itself: the configs given
    replace the whole set, a config not given returns to its default (as in Kafka), a bad
    value changes nothing."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    bootstrap = tidelog_broker.bootstrap
    create_topic("kafka-python", bootstrap, "legacy", 1)
    default_retention = describe(bootstrap, "legacy")["retention.ms"]
    assert default_retention[1] is False
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        res = ConfigResource(ConfigResourceType.TOPIC, "legacy", {"retention.ms": "3600000"})
        assert admin.alter_configs([res], incremental=False, raise_on_unknown=False) == {
            "topic": {"legacy": "OK"}
        }
    finally:
        admin.close()
    assert describe(bootstrap, "legacy")["retention.ms"] == ("3600000", True)

    w = Wire(bootstrap)
    try:
        assert alter_legacy(w, "legacy", {"segment.bytes": "1048576"}) == ec.NONE
        after = describe(bootstrap, "legacy")
        assert after["segment.bytes"] == ("1048576", True)
        assert after["retention.ms"] == default_retention
        assert alter_legacy(w, "legacy", {"segment.bytes": "1"}) == ec.INVALID_CONFIG
        assert describe(bootstrap, "legacy")["segment.bytes"] == ("1048576", True)
        assert alter_legacy(w, "nope", {"retention.ms": "1"}) == ec.UNKNOWN_TOPIC_OR_PARTITION
    finally:
        w.close()


def test_the_java_admin_client_describes_and_deletes_by_topic_id(tidelog_broker):
    from .kafka_tools import run_java

    java = Path(__file__).parent / "java" / "AdminById.java"
    done = run_java(str(java), tidelog_broker.bootstrap, "java-by-id")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:3] == [
        "described java-by-id 3",
        "unknown UnknownTopicIdException",
        "deleted true",
    ], done.stdout


def test_kafka_cli_tools_get_offsets_log_dirs_producers_and_broker_configs(tmp_path):
    """kafka-get-offsets --time -4/-5 (ListOffsets v8-9), kafka-log-dirs (DescribeLogDirs),
    kafka-transactions describe-producers (DescribeProducers) and kafka-configs --describe
    --entity-type brokers --all (every broker setting, with its source)."""
    import json

    from confluent_kafka import Producer

    from .kafka_tools import run_java

    broker = start_broker(tmp_path / "b", **{"log.retention.ms": "3600000", "num.partitions": "2"})
    try:
        bootstrap = broker.bootstrap
        create_topic("confluent-kafka", bootstrap, "tools", 2)
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})
        for i in range(20):
            p.produce("tools", value=b"x%d" % i, partition=i % 2)
        assert p.flush(30) == 0

        def tool(name: str, *args: str) -> str:
            done = run_java(f"org.apache.kafka.tools.{name}", "--bootstrap-server", bootstrap, *args)
            assert done.returncode == 0, done.stderr[-3000:]
            return done.stdout

        offsets = tool("GetOffsetShell", "--topic", "tools", "--time", "-4")
        assert sorted(offsets.split()) == ["tools:0:0", "tools:1:0"]
        latest = tool("GetOffsetShell", "--topic", "tools", "--time", "-1")
        assert sorted(latest.split()) == ["tools:0:10", "tools:1:10"]
        assert tool("GetOffsetShell", "--topic", "tools", "--time", "-5").split() == []  # nothing tiered

        dirs = json.loads(tool("LogDirsCommand", "--describe", "--topic-list", "tools").splitlines()[-1])
        (log_dir,) = dirs["brokers"][0]["logDirs"]
        assert log_dir["error"] is None
        sizes = {p["partition"]: p["size"] for p in log_dir["partitions"]}
        assert sizes.keys() == {"tools-0", "tools-1"}
        assert sizes["tools-0"] == broker.broker.replicas.partition("tools", 0).log.size_bytes > 0

        producers = tool("TransactionsCommand", "describe-producers", "--topic", "tools", "--partition", "1")
        header, row = producers.splitlines()[:2]
        assert header.split()[:4] == ["ProducerId", "ProducerEpoch", "LatestCoordinatorEpoch", "LastSequence"]
        assert row.split()[3] == "9"  # ten batches, sequences 0..9

        configs = tool(
            "ConfigCommand", "--describe", "--entity-type", "brokers", "--entity-name", "0", "--all"
        )
        settings = dict(
            line.strip().split(" ")[0].split("=", 1) for line in configs.splitlines()[1:] if "=" in line
        )
        assert settings["log.retention.ms"] == "3600000"
        assert settings["num.partitions"] == "2"
        assert settings["log.segment.bytes"] == str(1 << 30)
        assert settings["offsets.topic.num.partitions"] == "50"
        assert settings["listeners"] == f"PLAINTEXT://{bootstrap}"
        assert len(settings) >= 25
    finally:
        broker.stop()


def test_broker_configs_say_which_are_configured(tmp_path):
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    broker = start_broker(tmp_path / "b", **{"log.retention.hours": "5", "num.partitions": "3"})
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        res = ConfigResource("broker", "0")
        entries = admin.describe_configs([res])[res].result(30)
        static = ConfigSource.STATIC_BROKER_CONFIG.value
        configured = sorted(k for k, e in entries.items() if e.source == static)
        assert configured == ["log.retention.ms", "num.partitions"]
        assert entries["log.retention.ms"].value == str(5 * 3600 * 1000)
        assert entries["message.max.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
        assert all(e.is_read_only for e in entries.values())
    finally:
        broker.stop()


def test_config_changes_refused_as_a_whole(tidelog_broker):
    """An APPEND (list configs only) or a broker resource is refused with INVALID_REQUEST and
    changes nothing, for each API."""
    create_topic("confluent-kafka", tidelog_broker.bootstrap, "refusals", 1)
    IAC = m.IncrementalAlterConfigsRequest
    w = Wire(tidelog_broker.bootstrap)
    try:
        configs = [
            IAC.AlterConfigsResource.AlterableConfig(name="retention.ms", config_operation=0, value="5000"),
            IAC.AlterConfigsResource.AlterableConfig(
                name="cleanup.policy", config_operation=2, value="delete"
            ),
        ]
        req = IAC(
            resources=[IAC.AlterConfigsResource(resource_type=2, resource_name="refusals", configs=configs)]
        )
        out = w.request(req, 1).responses[0]
        assert out.error_code == ec.INVALID_REQUEST and "APPEND" in out.error_message
        assert describe(tidelog_broker.bootstrap, "refusals")["retention.ms"][1] is False
        assert alter_legacy(w, "refusals", {"retention.ms": "5000"}) == ec.NONE
        A = m.AlterConfigsRequest
        broker_res = A.AlterConfigsResource(
            resource_type=4,
            resource_name="0",
            configs=[A.AlterConfigsResource.AlterableConfig(name="x", value="1")],
        )
        assert w.request(A(resources=[broker_res], validate_only=False), 2).responses[0].error_code == (
            ec.INVALID_REQUEST
        )
    finally:
        w.close()
