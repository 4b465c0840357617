"""CreateTopics, DeleteTopics (v6 by topic id), CreatePartitions and ElectLeaders, and
auto-creation on first use; each is a change the controller makes and publishes before the
answer. ElectLeaders (v0: preferred only) answers each partition with NONE,
ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE or ELIGIBLE_LEADERS_NOT_AVAILABLE; asked
for every partition, it lists only those where an election was needed, as Kafka does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.broker.apis._registry import (
    ZERO_UUID,
    handles,
    log,
)
from tidelog.broker.apis._resolve import authorized, authorized_on_cluster
from tidelog.broker.controller import Election, TopicError, create_or_get
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation, AclResourceType, ConfigSource

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext
    from tidelog.broker.metadata import TopicMetadata


def may_create(ctx: RequestContext, name: str) -> bool:
    """CREATE on the cluster or on the topic, as Kafka asks for creating ``name``."""
    return authorized_on_cluster(ctx, AclOperation.CREATE) or authorized(
        ctx, AclOperation.CREATE, AclResourceType.TOPIC, name
    )


async def auto_create(ctx: RequestContext, name: str) -> tuple[TopicMetadata | None, int]:
    """Creates a topic on first use (auto.create.topics.enable): (topic, NONE) or (None, code)."""
    broker = ctx.broker
    if not may_create(ctx, name):
        return None, ec.TOPIC_AUTHORIZATION_FAILED
    try:
        return await create_or_get(broker.controller, lambda: broker.image, name, -1, {}), ec.NONE
    except TopicError as e:
        log.info("auto-create of %r refused: %s", name, e)
        # Being created or deleted by another request: the client retries.
        return None, ec.LEADER_NOT_AVAILABLE if e.code == ec.TOPIC_ALREADY_EXISTS else e.code


@handles(m.CreateTopicsRequest, 2, 7)
async def create_topics(ctx: RequestContext, req: m.CreateTopicsRequest) -> m.CreateTopicsResponse:
    broker = ctx.broker
    R = m.CreateTopicsResponse
    results = []
    for t in req.topics:
        res = R.CreatableTopicResult(
            name=t.name, error_code=ec.NONE, num_partitions=-1, replication_factor=-1
        )
        results.append(res)
        if not may_create(ctx, t.name):
            res.error_code = ec.TOPIC_AUTHORIZATION_FAILED
            res.error_message = "Authorization failed."
            continue
        try:
            assignments = None
            if t.assignments:
                if t.num_partitions != -1 or t.replication_factor != -1:
                    raise TopicError(
                        ec.INVALID_REQUEST,
                        "both numPartitions or replicationFactor and replicasAssignments were set; "
                        "both cannot be used at the same time",
                    )
                by_index = {a.partition_index: list(a.broker_ids) for a in t.assignments}
                if sorted(by_index) != list(range(len(t.assignments))):
                    raise TopicError(
                        ec.INVALID_REPLICA_ASSIGNMENT,
                        f"partitions {sorted(by_index)} are not consecutive from 0",
                    )
                assignments = [by_index[i] for i in range(len(by_index))]
            nulls = [c.name for c in t.configs if c.value is None]
            if nulls:  # as Kafka: a config given must have a value
                raise TopicError(
                    ec.INVALID_CONFIG, f"Null value not supported for topic configs: {','.join(nulls)}"
                )
            configs = {c.name: c.value for c in t.configs if c.value is not None}
            topic = await broker.controller.create_topic(
                t.name,
                t.num_partitions,
                t.replication_factor,
                configs,
                validate_only=req.validate_only,
                assignments=assignments,
            )
            res.topic_id = topic.topic_id
            res.num_partitions = len(topic.partitions)
            res.replication_factor = len(topic.partitions[0].replicas)
            res.configs = [
                R.CreatableTopicResult.CreatableTopicConfigs(
                    name=k,
                    value=str(v),
                    read_only=False,
                    config_source=ConfigSource.DEFAULT_CONFIG,
                    is_sensitive=False,
                )
                for k, v in sorted(broker.config.effective_topic_configs(topic.configs).items())
            ]
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
    return R(throttle_time_ms=0, topics=results)


@handles(m.DeleteTopicsRequest, 1, 6)
async def delete_topics(ctx: RequestContext, req: m.DeleteTopicsRequest) -> m.DeleteTopicsResponse:
    broker, version = ctx.broker, ctx.api_version
    R = m.DeleteTopicsResponse
    names = list(req.topic_names) if version < 6 else []
    results = []
    for t in req.topics if version >= 6 else []:
        if t.topic_id == ZERO_UUID and t.name is not None:
            names.append(t.name)
            continue
        topic = broker.image.topic_by_id(t.topic_id)
        if topic is not None:
            names.append(topic.name)
            continue
        results.append(
            R.DeletableTopicResult(
                name=None,
                topic_id=t.topic_id,
                error_code=ec.UNKNOWN_TOPIC_ID,
                error_message=f"no topic has id {t.topic_id}",
            )
        )
    for name in names:
        res = R.DeletableTopicResult(name=name, error_code=ec.NONE)
        results.append(res)
        if not authorized(ctx, AclOperation.DELETE, AclResourceType.TOPIC, name):
            res.error_code = ec.TOPIC_AUTHORIZATION_FAILED
            continue
        try:
            topic = await broker.controller.delete_topic(name)
            res.topic_id = topic.topic_id
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
    return R(throttle_time_ms=0, responses=results)


@handles(m.CreatePartitionsRequest, 0, 3)
async def create_partitions(
    ctx: RequestContext, req: m.CreatePartitionsRequest
) -> m.CreatePartitionsResponse:
    broker = ctx.broker
    R = m.CreatePartitionsResponse
    results = []
    for t in req.topics:
        res = R.CreatePartitionsTopicResult(name=t.name, error_code=ec.NONE)
        results.append(res)
        if not authorized(ctx, AclOperation.ALTER, AclResourceType.TOPIC, t.name):
            res.error_code = ec.TOPIC_AUTHORIZATION_FAILED
            continue
        try:
            await broker.controller.create_partitions(
                t.name,
                t.count,
                validate_only=req.validate_only,
                assignments=[list(a.broker_ids) for a in t.assignments] if t.assignments else None,
            )
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
    return R(throttle_time_ms=0, results=results)


@handles(m.ElectLeadersRequest, 0, 2)
async def elect_leaders(ctx: RequestContext, req: m.ElectLeadersRequest) -> m.ElectLeadersResponse:
    R = m.ElectLeadersResponse
    Result = R.ReplicaElectionResult
    preferred = ctx.api_version == 0 or req.election_type == 0
    wanted = (
        None
        if req.topic_partitions is None
        else [(t.topic, p) for t in req.topic_partitions for p in t.partitions]
    )
    try:
        if not authorized_on_cluster(ctx, AclOperation.ALTER):
            raise TopicError(ec.CLUSTER_AUTHORIZATION_FAILED, "ElectLeaders needs ALTER on the cluster")
        elections = await ctx.broker.controller.elect_leaders(preferred, wanted)
    except TopicError as e:
        if ctx.api_version == 0:  # no top-level code: each partition carries it
            elections = {key: Election(e.code, message=str(e)) for key in wanted or []}
        else:
            return R(throttle_time_ms=0, error_code=e.code, replica_election_results=[])
    by_topic: dict[str, list[m.ElectLeadersResponse.ReplicaElectionResult.PartitionResult]] = {}
    for (topic, index), election in elections.items():
        if wanted is None and election.code == ec.ELECTION_NOT_NEEDED:
            continue
        by_topic.setdefault(topic, []).append(
            Result.PartitionResult(
                partition_id=index, error_code=election.code, error_message=election.message
            )
        )
    results = [Result(topic=t, partition_result=parts) for t, parts in by_topic.items()]
    return R(throttle_time_ms=0, error_code=ec.NONE, replica_election_results=results)
