"""ACL authorization with Kafka's rules and error codes, on a broker with
``authorizer.class.name`` set: a PLAINTEXT listener whose clients are the super user
``User:ANONYMOUS`` (the administrator, on loopback) and a SASL_PLAINTEXT one where alice,
bob and carol log in with PLAIN. The ACLs are made with ``tidelog acls`` and with
confluent-kafka's admin client; Kafka's own ``kafka-acls`` lists what tidelog made and the
reverse."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tidelog.broker import Broker, BrokerConfig
from tidelog.broker.server import BrokerThread
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.records import build_batch

from .kafka_clients import Security, consume, produce
from .test_cli import tidelog
from .wire import Wire, create_topic, fetch_request, produce_raw

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
JAAS = "org.apache.kafka.common.security.plain.PlainLoginModule required " + " ".join(
    f'user_{u}="{p}"' for u, p in USERS.items()
)


@dataclasses.dataclass
class AclBroker:
    thread: BrokerThread
    admin_port: int
    sasl_port: int

    @property
    def admin_bootstrap(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def login(self, user: str) -> Wire:
        """A wire connection authenticated as ``user`` (PLAIN)."""
        w = Wire(f"127.0.0.1:{self.sasl_port}")
        assert w.request(m.SaslHandshakeRequest(mechanism="PLAIN"), 1).error_code == ec.NONE
        token = b"\0" + user.encode() + b"\0" + USERS[user].encode()
        assert w.request(m.SaslAuthenticateRequest(auth_bytes=token), 2).error_code == ec.NONE
        return w

    def acls(self, *args: str) -> str:
        r = tidelog("acls", *args, "--bootstrap-server", self.admin_bootstrap)
        assert r.returncode == 0, r.stderr
        return r.stdout


def start(tmp_path: Path, **extra: str) -> AclBroker:
    settings = {
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
        "sasl.enabled.mechanisms": "PLAIN",
        "sasl.jaas.config": JAAS,
        "authorizer.class.name": "tidelog",
        "super.users": "User:ANONYMOUS",
        **extra,
    }
    config = BrokerConfig.from_settings(settings, port=0, host="127.0.0.1", data_dir=str(tmp_path / "data"))
    thread = Broker(config).run_in_thread()
    ports = {e.name: e.port for e in thread.broker.endpoints}
    return AclBroker(thread, ports["PLAINTEXT"], ports["SASL_PLAINTEXT"])


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[AclBroker]:
    b = start(tmp_path)
    try:
        admin = Wire(b.admin_bootstrap)
        for topic in ("a", "b", "team1-x", "team2-x", "shared"):
            assert create_topic(admin, topic, 1) == ec.NONE
        admin.close()
        yield b
    finally:
        b.thread.stop()


def batch(value: bytes) -> bytes:
    return build_batch([(None, value)], now_ms=1_700_000_000_000)


def fetch_code(w: Wire, topic: str) -> int:
    return int(w.request(fetch_request(topic, 0, 0, 0), 11).responses[0].partitions[0].error_code)


def metadata(w: Wire, *topics: str) -> dict[str, int]:
    T = m.MetadataRequest.MetadataRequestTopic
    named = [T(name=t) for t in topics] if topics else None
    r = w.request(m.MetadataRequest(topics=named, allow_auto_topic_creation=False), 12)
    return {t.name: t.error_code for t in r.topics}


def commit_code(w: Wire, group: str, topic: str) -> int:
    C = m.OffsetCommitRequest
    part = C.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
        partition_index=0, committed_offset=1, committed_leader_epoch=-1, committed_metadata=""
    )
    req = C(
        group_id=group,
        generation_id_or_member_epoch=-1,
        member_id="",
        group_instance_id=None,
        retention_time_ms=-1,
        topics=[C.OffsetCommitRequestTopic(name=topic, partitions=[part])],
    )
    return int(w.request(req, 8).topics[0].partitions[0].error_code)


def delete_topic_code(w: Wire, name: str) -> int:
    req = m.DeleteTopicsRequest(topic_names=[name], timeout_ms=30_000)
    return int(w.request(req, 5).responses[0].error_code)


def test_acls_allow_deny_prefix_and_groups_with_kafkas_error_codes(acl_broker):
    b = acl_broker
    b.acls("add", "--allow-principal", "User:alice", "--operation", "Write", "--topic", "a")
    b.acls(
        "add", "--allow-principal", "User:bob", "--operation", "Read", "--topic", "team1-",
        "--resource-pattern-type", "prefixed",
    )  # fmt: skip
    b.acls("add", "--allow-principal", "User:*", "--operation", "Read", "--topic", "shared")
    b.acls("add", "--deny-principal", "User:carol", "--operation", "Read", "--topic", "shared")
    b.acls("add", "--allow-principal", "User:bob", "--operation", "Read", "--group", "g1")
    b.acls("add", "--allow-principal", "User:carol", "--operation", "Create", "--cluster")
    b.acls("add", "--allow-principal", "User:carol", "--operation", "Delete", "--topic", "team2-x")

    alice, bob, carol = b.login("alice"), b.login("bob"), b.login("carol")
    # Produce: WRITE on the topic.
    assert produce_raw(alice, "a", batch(b"x"))[0] == ec.NONE
    assert produce_raw(alice, "b", batch(b"x"))[0] == ec.TOPIC_AUTHORIZATION_FAILED
    assert produce_raw(bob, "team1-x", batch(b"x"))[0] == ec.TOPIC_AUTHORIZATION_FAILED  # READ only
    # Fetch: READ, by a prefixed grant, and a DENY that wins over an ALLOW to everyone.
    assert fetch_code(bob, "team1-x") == ec.NONE
    assert fetch_code(bob, "team2-x") == ec.TOPIC_AUTHORIZATION_FAILED
    assert fetch_code(bob, "shared") == ec.NONE
    assert fetch_code(carol, "shared") == ec.TOPIC_AUTHORIZATION_FAILED
    assert fetch_code(alice, "a") == ec.TOPIC_AUTHORIZATION_FAILED  # WRITE does not give READ
    # Metadata: a topic is listed when the principal may DESCRIBE it (which WRITE and READ
    # imply); named otherwise it is TOPIC_AUTHORIZATION_FAILED.
    assert metadata(alice) == {"a": ec.NONE, "shared": ec.NONE}
    assert metadata(bob) == {"shared": ec.NONE, "team1-x": ec.NONE}
    # carol's DENY of READ does not deny DESCRIBE, which everyone's READ implies; DELETE implies it too.
    assert metadata(carol) == {"shared": ec.NONE, "team2-x": ec.NONE}
    assert metadata(alice, "b", "a") == {"b": ec.TOPIC_AUTHORIZATION_FAILED, "a": ec.NONE}
    # OffsetCommit: READ on the group, then READ on the topic.
    assert commit_code(bob, "g1", "team1-x") == ec.NONE
    assert commit_code(bob, "g2", "team1-x") == ec.GROUP_AUTHORIZATION_FAILED
    assert commit_code(bob, "g1", "a") == ec.TOPIC_AUTHORIZATION_FAILED
    assert commit_code(alice, "g1", "a") == ec.GROUP_AUTHORIZATION_FAILED
    # CreateTopics: CREATE on the cluster (carol) or the topic; DeleteTopics: DELETE.
    assert create_topic(alice, "new-a", 1) == ec.TOPIC_AUTHORIZATION_FAILED
    assert create_topic(carol, "new-c", 1) == ec.NONE
    assert delete_topic_code(alice, "a") == ec.TOPIC_AUTHORIZATION_FAILED
    assert delete_topic_code(carol, "team2-x") == ec.NONE
    # Cluster-level requests.
    describe = alice.request(m.DescribeClusterRequest(include_cluster_authorized_operations=False), 0)
    assert describe.error_code == ec.CLUSTER_AUTHORIZATION_FAILED
    acls = alice.request(
        m.DescribeAclsRequest(
            resource_type_filter=1, resource_name_filter=None, pattern_type_filter=1, principal_filter=None,
            host_filter=None, operation=1, permission_type=1,
        ),
        1,
    )  # fmt: skip
    assert acls.error_code == ec.CLUSTER_AUTHORIZATION_FAILED
    # A follower's fetch needs CLUSTER_ACTION.
    follower = fetch_request("a", 0, 0, 0)
    follower.replica_id = 7
    part = alice.request(follower, 11).responses[0].partitions[0]
    assert part.error_code == ec.TOPIC_AUTHORIZATION_FAILED
    # Produce to an internal topic: nobody but the broker, not even a super user.
    admin = Wire(b.admin_bootstrap)
    assert produce_raw(admin, "__consumer_offsets", batch(b"x"))[0] in (
        ec.INVALID_TOPIC_EXCEPTION,
        ec.UNKNOWN_TOPIC_OR_PARTITION,  # not created until a group needs it
    )
    for w in (alice, bob, carol, admin):
        w.close()


def test_real_clients_see_authorization_errors_and_succeed_where_allowed(acl_broker):
    b = acl_broker
    b.acls("add", "--allow-principal", "User:alice", "--operation", "Write", "--topic", "a")
    b.acls("add", "--allow-principal", "User:bob", "--operation", "Read", "--topic", "a")
    b.acls("add", "--allow-principal", "User:bob", "--operation", "Read", "--group", "assign-only")
    bootstrap = f"127.0.0.1:{b.sasl_port}"
    alice = Security("SASL_PLAINTEXT", "PLAIN", "alice", "alice-pw")
    bob = Security("SASL_PLAINTEXT", "PLAIN", "bob", "bob-pw")
    sent = [(None, b"v%d" % i) for i in range(200)]
    for client in ("confluent-kafka", "kafka-python"):
        produce(client, bootstrap, "a", sent, "all", "none", security=alice)
    got = consume("confluent-kafka", bootstrap, "a", 1, expected=400, security=bob)
    assert len(got) == 400
    p = Producer(
        {"bootstrap.servers": bootstrap, **alice.settings("confluent-kafka"), "message.timeout.ms": 10_000}
    )
    errors: list[KafkaError] = []
    p.produce("b", b"no", on_delivery=lambda e, _m: errors.append(e))
    p.flush(30)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]


def test_admin_clients_are_told_the_operations_their_acls_allow(acl_broker):
    """``include_authorized_operations`` (Metadata, DescribeCluster, DescribeGroups): the
    operations Kafka reports for the resource type, those the principal's ACLs allow,
    implied ones (READ -> DESCRIBE, ALTER_CONFIGS -> DESCRIBE_CONFIGS) included; a super
    user gets every one."""
    from confluent_kafka import TopicCollection

    b = acl_broker
    b.acls("add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "a")
    b.acls("add", "--allow-principal", "User:alice", "--operation", "AlterConfigs", "--topic", "a")
    b.acls("add", "--allow-principal", "User:alice", "--operation", "Describe", "--cluster")
    b.acls("add", "--allow-principal", "User:alice", "--operation", "Read", "--group", "g1")
    alice = Security("SASL_PLAINTEXT", "PLAIN", "alice", "alice-pw")
    as_alice = AdminClient(
        {"bootstrap.servers": f"127.0.0.1:{b.sasl_port}", **alice.settings("confluent-kafka")}
    )
    as_admin = AdminClient({"bootstrap.servers": b.admin_bootstrap})
    op = AclOperation

    def topic_ops(admin: AdminClient, **kw: bool) -> set[AclOperation] | None:
        described = admin.describe_topics(TopicCollection(["a"]), **kw)["a"].result(30)
        return None if described.authorized_operations is None else set(described.authorized_operations)

    assert topic_ops(as_alice, include_authorized_operations=True) == {
        op.READ, op.DESCRIBE, op.ALTER_CONFIGS, op.DESCRIBE_CONFIGS
    }  # fmt: skip
    assert topic_ops(as_alice) is None  # not asked: not computed
    assert topic_ops(as_admin, include_authorized_operations=True) == {
        op.READ, op.WRITE, op.CREATE, op.DESCRIBE, op.DELETE, op.ALTER, op.DESCRIBE_CONFIGS,
        op.ALTER_CONFIGS,
    }  # fmt: skip
    cluster = as_alice.describe_cluster(include_authorized_operations=True).result(30)
    assert set(cluster.authorized_operations) == {op.DESCRIBE}
    cluster = as_admin.describe_cluster(include_authorized_operations=True).result(30)
    assert set(cluster.authorized_operations) == {
        op.CREATE, op.CLUSTER_ACTION, op.DESCRIBE_CONFIGS, op.ALTER_CONFIGS, op.IDEMPOTENT_WRITE, op.ALTER,
        op.DESCRIBE,
    }  # fmt: skip
    group = as_alice.describe_consumer_groups(["g1"], include_authorized_operations=True)["g1"].result(30)
    assert set(group.authorized_operations) == {op.READ, op.DESCRIBE}


def test_acls_are_managed_over_the_wire_kept_across_restarts_and_read_by_both_tools(tmp_path):
    """ACLs made with tidelog's tool are listed by Kafka's ``kafka-acls`` in its own format,
    and ACLs made by ``kafka-acls`` (and confluent-kafka's admin client) by tidelog's; they
    survive a restart; invalid ones get INVALID_REQUEST; DeleteAcls removes what matches."""
    from .kafka_tools import run_java

    b = start(tmp_path)
    try:
        b.acls(
            "add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Write",
            "--operation",
            "Read",
            "--topic",
            "t1",
        )
        done = run_java(
            "org.apache.kafka.tools.AclCommand", "--bootstrap-server", b.admin_bootstrap, "--add",
            "--deny-principal", "User:bob", "--operation", "Describe", "--group", "team-",
            "--resource-pattern-type", "prefixed",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        admin = AdminClient({"bootstrap.servers": b.admin_bootstrap})
        created = admin.create_acls(
            [
                AclBinding(
                    ResourceType.TOPIC,
                    "t2",
                    ResourcePatternType.LITERAL,
                    "User:carol",
                    "*",
                    AclOperation.ALTER_CONFIGS,
                    AclPermissionType.ALLOW,
                ),
                AclBinding(
                    ResourceType.BROKER,
                    "not-the-cluster",
                    ResourcePatternType.LITERAL,
                    "User:carol",
                    "*",
                    AclOperation.ALTER,
                    AclPermissionType.ALLOW,
                ),
            ]
        )
        results = {binding.name: f for binding, f in created.items()}
        results["t2"].result(30)
        with pytest.raises(KafkaException) as refused:
            results["not-the-cluster"].result(30)
        assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST

        kafka_listing = run_java(
            "org.apache.kafka.tools.AclCommand", "--bootstrap-server", b.admin_bootstrap, "--list"
        )
        assert kafka_listing.returncode == 0, kafka_listing.stderr
        ours = b.acls("list")
        for text in (kafka_listing.stdout, ours):
            assert "ResourcePattern(resourceType=TOPIC, name=t1, patternType=LITERAL)" in text
            assert "(principal=User:alice, host=*, operation=WRITE, permissionType=ALLOW)" in text
            assert "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)" in text
            assert "ResourcePattern(resourceType=GROUP, name=team-, patternType=PREFIXED)" in text
            assert "(principal=User:bob, host=*, operation=DESCRIBE, permissionType=DENY)" in text
            assert "(principal=User:carol, host=*, operation=ALTER_CONFIGS, permissionType=ALLOW)" in text
        assert len(b.thread.broker.image.acls) == 4

        b.thread.stop()
        b = AclBroker(Broker(b.thread.broker.config).run_in_thread(), 0, 0)
        b.admin_port = next(e.port for e in b.thread.broker.endpoints if e.name == "PLAINTEXT")
        assert len(b.thread.broker.image.acls) == 4
        admin = AdminClient({"bootstrap.servers": b.admin_bootstrap})
        alice_filter = AclBindingFilter(
            ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None, AclOperation.ANY,
            AclPermissionType.ANY,
        )  # fmt: skip
        (deleted,) = admin.delete_acls([alice_filter]).values()
        assert sorted(a.operation for a in deleted.result(30)) == [AclOperation.READ, AclOperation.WRITE]
        assert "User:alice" not in b.acls("list")
        assert b.acls("remove", "--deny-principal", "User:bob", "--operation", "Describe", "--group", "team-",
                      "--resource-pattern-type", "prefixed") == "removed 1 ACL(s)\n"  # fmt: skip
        assert len(b.thread.broker.image.acls) == 1
    finally:
        b.thread.stop()
