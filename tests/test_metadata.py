"""The metadata image and the controller seam: every change is a new, versioned image that
the handlers answer from, and the group coordinator follows the leadership of
``__consumer_offsets`` partitions, loading a partition's groups when this broker becomes its
leader and forgetting them when it stops being it (so that, in a cluster, coordinators can
move). The image is published here as a cluster's controller will publish it."""

from __future__ import annotations

import dataclasses

from tidelog.broker.config import Endpoint
from tidelog.broker.groups.store import TOPIC as OFFSETS
from tidelog.broker.metadata import BrokerMetadata, DepartedBrokers, MetadataImage, TopicMetadata
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m

from .wire import Wire, coordinator, create_topic, fetch_request, produce_one, read_all


def commit(w: Wire, group: str, topic: str, offset: int) -> int:
    OC = m.OffsetCommitRequest
    r = w.request(
        OC(
            group_id=group,
            generation_id_or_member_epoch=-1,
            member_id="",
            topics=[
                OC.OffsetCommitRequestTopic(
                    name=topic,
                    partitions=[
                        OC.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                            partition_index=0, committed_offset=offset, committed_metadata=None
                        )
                    ],
                )
            ],
        ),
        8,
    )
    return r.topics[0].partitions[0].error_code


def fetch_offset(w: Wire, group: str, topic: str) -> tuple[int, int]:
    """(top-level error, committed offset of partition 0)."""
    OF = m.OffsetFetchRequest
    r = w.request(
        OF(group_id=group, topics=[OF.OffsetFetchRequestTopic(name=topic, partition_indexes=[0])]), 7
    )
    return r.error_code, r.topics[0].partitions[0].committed_offset if r.topics else -1


def test_every_change_is_a_new_image_the_handlers_answer_from(tidelog_broker):
    broker = tidelog_broker.broker
    before = broker.image
    w = Wire(tidelog_broker.bootstrap)
    try:
        assert create_topic(w, "img", 2) == ec.NONE
        after = broker.image
        assert after.version > before.version and before.topic("img") is None
        topic = after.topic("img")
        assert topic is not None and [p.leader for p in topic.partitions] == [0, 0]
        meta = w.request(m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name="img")]), 12)
        assert meta.topics[0].topic_id == topic.topic_id
        assert meta.controller_id == after.controller_id == 0
    finally:
        w.close()


OTHER = BrokerMetadata(7, (Endpoint("PLAINTEXT", "elsewhere.example", 19092),))


def move_leader(b, topic: str, index: int, node: int) -> None:
    """Publishes, on the broker's loop, the image in force with ``topic``-``index`` led by
    ``node`` (a new leader epoch; broker 7 known as elsewhere.example:19092; the new leader
    alone in the ISR), as a cluster's controller will publish it."""
    broker = b.broker
    me = broker.config.node_id
    image = broker.image
    meta = image.topic(topic)
    assert meta is not None
    parts = list(meta.partitions)
    parts[index] = dataclasses.replace(
        parts[index], leader=node, leader_epoch=parts[index].leader_epoch + 1, replicas=(me, 7), isr=(node,)
    )
    moved = TopicMetadata(meta.name, meta.topic_id, tuple(parts), meta.configs, meta.internal)
    image = image.with_brokers([*image.brokers.values(), OTHER], image.controller_id)
    b.run(broker.replicas.apply, image.with_topics([moved]))


def test_a_partition_led_elsewhere_is_not_served_here(tidelog_broker):
    """Produce and fetch of a partition the image says another broker leads get
    NOT_LEADER_OR_FOLLOWER, and Metadata names that leader; when leadership comes back,
    what was acknowledged before is there."""
    b = tidelog_broker
    w = Wire(b.bootstrap)
    try:
        assert create_topic(w, "led", 1) == ec.NONE
        assert produce_one(w, "led", b"before") == (ec.NONE, 0)
        move_leader(b, "led", 0, 7)
        assert produce_one(w, "led", b"refused")[0] == ec.NOT_LEADER_OR_FOLLOWER
        fetched = w.request(fetch_request("led", 0, 0, 0), 12)
        assert fetched.responses[0].partitions[0].error_code == ec.NOT_LEADER_OR_FOLLOWER
        meta = w.request(m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name="led")]), 12)
        assert [(p.leader_id, p.leader_epoch) for p in meta.topics[0].partitions] == [(7, 1)]
        assert sorted((x.node_id, x.host, x.port) for x in meta.brokers)[1] == (7, "elsewhere.example", 19092)
        move_leader(b, "led", 0, b.broker.config.node_id)
        assert produce_one(w, "led", b"after") == (ec.NONE, 1)
    finally:
        w.close()
    assert read_all(b.bootstrap, "led") == {0: b"before", 1: b"after"}


def test_group_coordination_follows_the_offsets_partition_leadership(tidelog_broker):
    b = tidelog_broker
    broker = b.broker
    me = broker.config.node_id
    w = Wire(b.bootstrap)
    try:
        assert coordinator(w, "mover")[:2] == (ec.NONE, me)
        assert create_topic(w, "t", 1) == ec.NONE
        assert commit(w, "mover", "t", 42) == ec.NONE
        assert fetch_offset(w, "mover", "t") == (ec.NONE, 42)
        index = broker.groups.store.partition_of("mover")
        move_leader(b, OFFSETS, index, 7)
        assert "mover" not in broker.groups.groups
        assert coordinator(w, "mover") == (ec.NONE, 7, "elsewhere.example", 19092)
        assert fetch_offset(w, "mover", "t")[0] == ec.NOT_COORDINATOR
        assert commit(w, "mover", "t", 43) == ec.NOT_COORDINATOR
        move_leader(b, OFFSETS, index, me)
        assert coordinator(w, "mover")[:2] == (ec.NONE, me)
        assert fetch_offset(w, "mover", "t") == (ec.NONE, 42), (
            "the group was not loaded back from its partition"
        )
    finally:
        w.close()


def test_an_image_from_etcd_keys_skips_what_does_not_decode():
    """The image a cluster's brokers build from etcd's keys: well-formed keys make brokers,
    topics and partitions; a key that is not JSON, or lacks a field, is skipped (logged), and
    a topic shows its partitions only up to the first one missing, so indexes never shift."""
    import json
    import uuid

    from tidelog.cluster.etcd import KeyValue
    from tidelog.cluster.etcd_controller import MetadataState

    topic_id = uuid.uuid4()

    def kv(key: str, value) -> KeyValue:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        return KeyValue(b"/c/" + key.encode(), data, 1, 1, 1, 0)

    def part(leader: int) -> dict:
        return {"leader": leader, "leader_epoch": 3, "replicas": [leader], "isr": [leader]}

    endpoint = {"name": "PLAINTEXT", "host": "h", "port": 1, "security_protocol": "PLAINTEXT"}
    state = MetadataState(b"/c/")
    state.load(
        [
            kv("cluster_id", b"abc"),
            kv("controller", {"node_id": 2, "epoch": 1}),
            kv("brokers/2", {"node_id": 2, "rack": None, "endpoints": [endpoint]}),
            kv("brokers/3", b"not json"),
            kv("topics/t", {"id": str(topic_id), "partitions": 4, "configs": {"retention.ms": 5}}),
            kv("topics/broken", {"partitions": 1}),
            kv("partitions/t/0", part(2)),
            kv("partitions/t/1", part(2)),
            kv("partitions/t/3", part(2)),
            kv("partitions/t/x", part(2)),
        ],
        revision=42,
    )
    image = state.image()
    assert (image.version, image.cluster_id, image.controller_id, sorted(image.brokers)) == (
        42,
        "abc",
        2,
        [2],
    )
    assert image.brokers[2].endpoint("PLAINTEXT") == Endpoint("PLAINTEXT", "h", 1, "PLAINTEXT")
    assert sorted(image.topics) == ["t"]
    t = image.topic_by_id(topic_id)
    assert [(p.index, p.leader, p.leader_epoch) for p in t.partitions] == [(0, 2, 3), (1, 2, 3)]
    assert dict(t.configs) == {"retention.ms": "5"}


def test_a_departed_broker_is_listed_for_the_grace_then_dropped_and_a_returning_one_replaces_it():
    def image(*ids: int, port: int = 9092) -> MetadataImage:
        brokers = [
            BrokerMetadata(i, (Endpoint("PLAINTEXT", "127.0.0.1", port + i, "PLAINTEXT"),)) for i in ids
        ]
        return MetadataImage().with_brokers(brokers, 1)

    departed = DepartedBrokers(grace=2.0)
    three, two = image(1, 2, 3), image(1, 3)
    departed.note(three, two, now=100.0)
    assert [b.node_id for b in departed.listed(two, now=101.9)] == [1, 2, 3]
    assert [b.node_id for b in departed.listed(two, now=102.1)] == [1, 3]
    departed.note(two, two, now=101.0)  # a later image without it keeps its departure time
    assert [b.node_id for b in departed.listed(two, now=101.2)] == [1, 2, 3]
    back = image(1, 2, 3, port=7000)  # broker 2 registered again, elsewhere
    departed.note(two, back, now=101.5)
    assert [b.endpoints[0].port for b in departed.listed(back, now=101.6)] == [7001, 7002, 7003]
