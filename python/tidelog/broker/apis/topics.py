"""CreateTopics, DeleteTopics (v6 by topic id) and CreatePartitions, and auto-creation on first
use; the work is in TopicManager."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidelog.broker.apis._registry import (
    ZERO_UUID,
    handles,
    log,
)
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import ConfigSource

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext
    from tidelog.broker.server import Broker


async def auto_create(broker: Broker, name: str) -> tuple[Any, int]:
    """Creates a topic on first use (auto.create.topics.enable): (topic, NONE) or (None, code)."""
    from tidelog.broker.topics import TopicError

    try:
        return await broker.topics.create_async(name, -1, -1, {}), ec.NONE
    except TopicError as e:
        log.info("auto-create of %r refused: %s", name, e)
        # Being created or deleted by another request: the client retries.
        return None, ec.LEADER_NOT_AVAILABLE if e.code == ec.TOPIC_ALREADY_EXISTS else e.code


@handles(m.CreateTopicsRequest, 2, 7)
async def create_topics(ctx: RequestContext, req: m.CreateTopicsRequest) -> m.CreateTopicsResponse:
    broker = ctx.broker
    from tidelog.broker.topics import TopicError

    R = m.CreateTopicsResponse
    results = []
    for t in req.topics:
        res = R.CreatableTopicResult(
            name=t.name, error_code=ec.NONE, num_partitions=-1, replication_factor=-1
        )
        results.append(res)
        try:
            if t.assignments:
                raise TopicError(ec.INVALID_REQUEST, "manual replica assignment is not supported")
            nulls = [c.name for c in t.configs if c.value is None]
            if nulls:  # as Kafka: a config given must have a value
                raise TopicError(
                    ec.INVALID_CONFIG, f"Null value not supported for topic configs: {','.join(nulls)}"
                )
            configs = {c.name: c.value for c in t.configs if c.value is not None}
            topic = await broker.topics.create_async(
                t.name, t.num_partitions, t.replication_factor, configs, req.validate_only
            )
            res.topic_id = topic.topic_id
            res.num_partitions = len(topic.partitions)
            res.replication_factor = 1
            res.configs = [
                R.CreatableTopicResult.CreatableTopicConfigs(
                    name=k,
                    value=str(v),
                    read_only=False,
                    config_source=ConfigSource.DEFAULT_CONFIG,
                    is_sensitive=False,
                )
                for k, v in sorted(broker.topics.effective_configs(topic).items())
            ]
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
    return R(throttle_time_ms=0, topics=results)


@handles(m.DeleteTopicsRequest, 1, 6)
async def delete_topics(ctx: RequestContext, req: m.DeleteTopicsRequest) -> m.DeleteTopicsResponse:
    broker, version = ctx.broker, ctx.api_version
    from tidelog.broker.topics import TopicError

    R = m.DeleteTopicsResponse
    names = list(req.topic_names) if version < 6 else []
    results = []
    for t in req.topics if version >= 6 else []:
        if t.topic_id == ZERO_UUID and t.name is not None:
            names.append(t.name)
            continue
        topic = broker.topics.by_id.get(t.topic_id)
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
        try:
            topic = await broker.topics.delete(name)
            res.topic_id = topic.topic_id
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
        results.append(res)
    return R(throttle_time_ms=0, responses=results)


@handles(m.CreatePartitionsRequest, 0, 3)
async def create_partitions(
    ctx: RequestContext, req: m.CreatePartitionsRequest
) -> m.CreatePartitionsResponse:
    broker = ctx.broker
    from tidelog.broker.topics import TopicError

    R = m.CreatePartitionsResponse
    results = []
    for t in req.topics:
        res = R.CreatePartitionsTopicResult(name=t.name, error_code=ec.NONE)
        try:
            await broker.topics.add_partitions(t.name, t.count, req.validate_only)
        except TopicError as e:
            res.error_code = e.code
            res.error_message = str(e)
        results.append(res)
    return R(throttle_time_ms=0, results=results)
