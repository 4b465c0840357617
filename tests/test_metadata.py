"""The metadata image and the controller seam: every change is a new, versioned image that
the handlers answer from, and the group coordinator follows the leadership of
``__consumer_offsets`` partitions, loading a partition's groups when this broker becomes its
leader and forgetting them when it stops being it (so that, in a cluster, coordinators can
move). The image is published here as a cluster's controller will publish it."""

from __future__ import annotations

import dataclasses

from tidelog.broker.config import Endpoint
from tidelog.broker.groups.store import TOPIC as OFFSETS
from tidelog.broker.metadata import BrokerMetadata, TopicMetadata
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m

from .wire import Wire, create_topic


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


def coordinator(w: Wire, group: str) -> tuple[int, int, str, int]:
    r = w.request(m.FindCoordinatorRequest(key_type=0, coordinator_keys=[group]), 4)
    c = r.coordinators[0]
    return c.error_code, c.node_id, c.host, c.port


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
        other = BrokerMetadata(7, (Endpoint("PLAINTEXT", "elsewhere.example", 19092),))

        def lead(node: int) -> None:
            image = broker.image
            offsets = image.topic(OFFSETS)
            assert offsets is not None
            parts = list(offsets.partitions)
            parts[index] = dataclasses.replace(
                parts[index],
                leader=node,
                leader_epoch=parts[index].leader_epoch + 1,
                replicas=(me, 7),
                isr=(me, 7),
            )
            moved = TopicMetadata(
                offsets.name, offsets.topic_id, tuple(parts), offsets.configs, offsets.internal
            )
            image = image.with_brokers([*image.brokers.values(), other], image.controller_id)
            b.run(broker.replicas.apply, image.with_topics([moved]))

        lead(7)
        assert "mover" not in broker.groups.groups
        assert coordinator(w, "mover") == (ec.NONE, 7, "elsewhere.example", 19092)
        assert fetch_offset(w, "mover", "t")[0] == ec.NOT_COORDINATOR
        assert commit(w, "mover", "t", 43) == ec.NOT_COORDINATOR
        lead(me)
        assert coordinator(w, "mover")[:2] == (ec.NONE, me)
        assert fetch_offset(w, "mover", "t") == (ec.NONE, 42), (
            "the group was not loaded back from its partition"
        )
    finally:
        w.close()
