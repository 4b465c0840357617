"""ApiVersions (derived from the registry), Metadata (v10+ also by topic id; an offline
partition has no leader), DescribeCluster and DescribeLogDirs: what the cluster, this one
broker, looks like."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from tidelog.broker.apis._registry import (
    ADVERTISED,
    ZERO_UUID,
    handles,
)
from tidelog.broker.apis._resolve import authorized, authorized_on_cluster, authorized_operations
from tidelog.broker.apis.topics import auto_create
from tidelog.broker.metadata import NO_LEADER, BrokerMetadata, PartitionMetadata, TopicMetadata
from tidelog.broker.partition import OfflinePartition
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import CLUSTER_NAME, AclOperation, AclResourceType

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext
    from tidelog.broker.server import Broker

SOFTWARE_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")


@handles(m.ApiVersionsRequest, 0, 4)
async def api_versions(ctx: RequestContext, req: m.ApiVersionsRequest) -> m.ApiVersionsResponse:
    version = ctx.api_version
    R = m.ApiVersionsResponse
    if version >= 3 and not (
        SOFTWARE_NAME.fullmatch(req.client_software_name or "")
        and SOFTWARE_NAME.fullmatch(req.client_software_version or "")
    ):
        return R(error_code=ec.INVALID_REQUEST)
    if version >= 3:  # KIP-511: the session remembers what the client says it is
        ctx.session.client_software_name = req.client_software_name
        ctx.session.client_software_version = req.client_software_version
    keys = [
        R.ApiVersion(api_key=k, min_version=lo, max_version=hi) for k, (lo, hi) in sorted(ADVERTISED.items())
    ]
    return R(error_code=ec.NONE, api_keys=keys)


def _broker_entries(ctx: RequestContext, cls: Any, brokers: Iterable[BrokerMetadata]) -> list[Any]:
    """``brokers`` as Metadata or DescribeCluster entries (node_id / broker_id), each at its
    endpoint for the listener the request came in on, as Kafka answers (a broker without
    that listener is left out)."""
    id_field = "node_id" if "node_id" in cls.__slots__ else "broker_id"
    entries = []
    for b in brokers:
        e = b.endpoint(ctx.session.listener)
        if e is not None:
            entry = cls(host=e.host, port=e.port, rack=b.rack)
            setattr(entry, id_field, b.node_id)
            entries.append(entry)
    return entries


@handles(m.MetadataRequest, 0, 12)
async def metadata(ctx: RequestContext, req: m.MetadataRequest) -> m.MetadataResponse:
    broker, version = ctx.broker, ctx.api_version
    R = m.MetadataResponse
    # v10+: a topic given with a (non-zero) id is looked up by it, whatever its name says
    # (the Java client sends "" or null), and never auto-created.
    wanted: list[tuple[str | None, uuid.UUID | None]]

    def described(name: str) -> bool:
        return authorized(ctx, AclOperation.DESCRIBE, AclResourceType.TOPIC, name)

    if req.topics is None or (version == 0 and not req.topics):  # all those it may see
        wanted = [(name, None) for name in sorted(broker.image.topics) if described(name)]
    else:
        wanted = [
            (None, t.topic_id) if version >= 10 and t.topic_id != ZERO_UUID else (t.name, None)
            for t in req.topics
            if t.name is not None or (version >= 10 and t.topic_id != ZERO_UUID)
        ]
    auto = broker.config.auto_create_topics_enable and (version < 4 or req.allow_auto_topic_creation)
    topics = []
    for i, (name, topic_id) in enumerate(wanted):
        if i % 1000 == 999:  # a request naming many topics lets other connections in
            await trio.lowlevel.checkpoint()
        topic: TopicMetadata | None
        if name is None:
            assert topic_id is not None  # named by id alone
            topic = broker.image.topic_by_id(topic_id)
            if topic is None or not described(topic.name):
                topics.append(
                    R.MetadataResponseTopic(error_code=ec.UNKNOWN_TOPIC_ID, name=None, topic_id=topic_id)
                )
                continue
            name = topic.name
        topic = broker.image.topic(name)
        code: int = ec.UNKNOWN_TOPIC_OR_PARTITION
        if not described(name):
            topic, code = None, ec.TOPIC_AUTHORIZATION_FAILED
        elif topic is None and auto:
            topic, code = await auto_create(ctx, name)
        if topic is None:
            topics.append(R.MetadataResponseTopic(error_code=code, name=name))
            continue
        parts = [_partition_metadata(broker, topic, p) for p in topic.partitions]
        entry = R.MetadataResponseTopic(
            error_code=ec.NONE,
            name=name,
            topic_id=topic.topic_id,
            is_internal=topic.internal,
            partitions=parts,
        )
        if version >= 8 and req.include_topic_authorized_operations:
            entry.topic_authorized_operations = authorized_operations(ctx, AclResourceType.TOPIC, name)
        topics.append(entry)
    out = R(
        brokers=_broker_entries(
            ctx, R.MetadataResponseBroker, broker.departed.listed(broker.image, broker.clock.monotonic())
        ),
        cluster_id=broker.image.cluster_id,
        controller_id=broker.image.controller_id,
        topics=topics,
    )
    if 8 <= version <= 10 and req.include_cluster_authorized_operations:
        out.cluster_authorized_operations = authorized_operations(ctx, AclResourceType.CLUSTER, CLUSTER_NAME)
    return out


def _partition_metadata(broker: Broker, topic: TopicMetadata, p: PartitionMetadata) -> Any:
    """One partition in a Metadata response, from the image. As in Kafka, a replica whose
    broker is not live, or whose log is offline here, is an offline replica; a partition
    whose leader is one of those has no leader (LEADER_NOT_AVAILABLE, or KAFKA_STORAGE_ERROR
    for this broker's own offline log)."""
    me, live = broker.config.node_id, broker.image.brokers
    broken_here = isinstance(broker.replicas.hosted(topic.name, p.index), OfflinePartition)
    offline = [r for r in p.replicas if r not in live or (r == me and broken_here)]
    code: int = ec.NONE
    if p.leader in offline or p.leader not in live:
        code = ec.KAFKA_STORAGE_ERROR if p.leader == me and broken_here else ec.LEADER_NOT_AVAILABLE
    return m.MetadataResponse.MetadataResponseTopic.MetadataResponsePartition(
        error_code=code,
        partition_index=p.index,
        leader_id=NO_LEADER if code else p.leader,
        leader_epoch=p.leader_epoch,
        replica_nodes=list(p.replicas),
        isr_nodes=[r for r in p.isr if r not in offline],
        offline_replicas=offline,
    )


@handles(m.DescribeClusterRequest, 0, 1)
async def describe_cluster(ctx: RequestContext, req: m.DescribeClusterRequest) -> m.DescribeClusterResponse:
    R = m.DescribeClusterResponse
    image = ctx.broker.image
    if not authorized_on_cluster(ctx, AclOperation.DESCRIBE):
        return R(throttle_time_ms=0, error_code=ec.CLUSTER_AUTHORIZATION_FAILED, brokers=[])
    out = R(
        throttle_time_ms=0,
        error_code=ec.NONE,
        cluster_id=image.cluster_id,
        controller_id=image.controller_id,
        brokers=_broker_entries(ctx, R.DescribeClusterBroker, image.brokers.values()),
    )
    if req.include_cluster_authorized_operations:
        out.cluster_authorized_operations = authorized_operations(ctx, AclResourceType.CLUSTER, CLUSTER_NAME)
    return out


@handles(m.DescribeLogDirsRequest, 1, 4)
async def describe_log_dirs(ctx: RequestContext, req: m.DescribeLogDirsRequest) -> m.DescribeLogDirsResponse:
    """The one log directory, its partitions' sizes and the disk's space; topics null means all."""
    broker = ctx.broker
    R = m.DescribeLogDirsResponse
    D = R.DescribeLogDirsResult
    if not authorized_on_cluster(ctx, AclOperation.DESCRIBE):
        return R(throttle_time_ms=0, error_code=ec.CLUSTER_AUTHORIZATION_FAILED, results=[])
    if req.topics is None:
        wanted = [(name, [p.index for p in t.partitions]) for name, t in sorted(broker.image.topics.items())]
    else:
        wanted = [(t.topic, list(t.partitions)) for t in req.topics]
    topics = []
    for name, indexes in wanted:
        parts = [
            D.DescribeLogDirsTopic.DescribeLogDirsPartition(
                partition_index=i, partition_size=part.log.size_bytes, offset_lag=0, is_future_key=False
            )
            for i in indexes
            if (part := broker.replicas.partition(name, i)) is not None
        ]
        if parts:
            topics.append(D.DescribeLogDirsTopic(name=name, partitions=parts))
    usage = await trio.to_thread.run_sync(shutil.disk_usage, broker.config.data_dir)
    result = D(
        error_code=ec.NONE,
        log_dir=os.path.abspath(broker.config.data_dir),
        topics=topics,
        total_bytes=usage.total,
        usable_bytes=usage.free,
    )
    return R(throttle_time_ms=0, error_code=ec.NONE, results=[result])
