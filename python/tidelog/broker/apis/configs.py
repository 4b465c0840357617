"""DescribeConfigs (topics, and every broker setting with its source), AlterConfigs (replaces
the set) and IncrementalAlterConfigs (SET and DELETE)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tidelog.broker.apis._registry import (
    handles,
)
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AlterConfigOp, ConfigResourceType, ConfigSource

if TYPE_CHECKING:
    from tidelog.broker.server import Broker


@handles(32, 0, 4)
async def describe_configs(broker: Broker, req: Any, header: Any, version: int) -> Any:
    R = m.DescribeConfigsResponse
    results = []
    for res in req.resources:
        out = R.DescribeConfigsResult(
            error_code=ec.NONE, resource_type=res.resource_type, resource_name=res.resource_name, configs=[]
        )
        results.append(out)
        if res.resource_type == ConfigResourceType.TOPIC:
            topic = broker.topics.topics.get(res.resource_name)
            if topic is None:
                out.error_code = ec.UNKNOWN_TOPIC_OR_PARTITION
                continue
            values = broker.topics.effective_configs(topic)
            topic_set, default = ConfigSource.DYNAMIC_TOPIC_CONFIG, ConfigSource.DEFAULT_CONFIG
            sources = {name: topic_set if name in topic.configs else default for name in values}
            read_only = False
        elif res.resource_type == ConfigResourceType.BROKER:  # every setting, configured or default
            described = broker.config.described(broker.port)
            values = {name: value for name, (value, _) in described.items()}
            static, default = ConfigSource.STATIC_BROKER_CONFIG, ConfigSource.DEFAULT_CONFIG
            sources = {name: static if configured else default for name, (_, configured) in described.items()}
            read_only = True  # no dynamic broker configs: they change with a restart
        else:
            out.error_code = ec.INVALID_REQUEST
            continue
        for name, value in sorted(values.items()):
            if res.configuration_keys is not None and name not in res.configuration_keys:
                continue
            out.configs.append(
                R.DescribeConfigsResult.DescribeConfigsResourceResult(
                    name=name,
                    value=None if value is None else str(value),
                    read_only=read_only,
                    config_source=sources[name],
                    is_sensitive=False,
                    synonyms=[],
                )
            )
    return R(throttle_time_ms=0, results=results)


@handles(44, 0, 1)
async def incremental_alter_configs(broker: Broker, req: Any, header: Any, version: int) -> Any:
    from tidelog.broker.topics import TopicError

    R = m.IncrementalAlterConfigsResponse
    responses = []
    for res in req.resources:
        out = R.AlterConfigsResourceResponse(
            error_code=ec.NONE, resource_type=res.resource_type, resource_name=res.resource_name
        )
        responses.append(out)
        if res.resource_type != ConfigResourceType.TOPIC:
            out.error_code = ec.INVALID_REQUEST
            out.error_message = "only topic configs can be altered"
            continue
        changes: dict[str, str | None] = {}
        for c in res.configs:
            if c.config_operation == AlterConfigOp.SET:
                changes[c.name] = c.value
            elif c.config_operation == AlterConfigOp.DELETE:
                changes[c.name] = None
            else:
                out.error_code = ec.INVALID_REQUEST
                out.error_message = "APPEND and SUBTRACT apply to list configs, which topics here do not have"
        if out.error_code:
            continue
        try:
            await broker.topics.alter_configs(res.resource_name, changes, req.validate_only)
        except TopicError as e:
            out.error_code = e.code
            out.error_message = str(e)
    return R(throttle_time_ms=0, responses=responses)


@handles(33, 0, 2)
async def alter_configs(broker: Broker, req: Any, header: Any, version: int) -> Any:
    """The non-incremental AlterConfigs: each resource's configs are replaced by those given
    (one not given returns to its default), as Kafka's legacy API does."""
    from tidelog.broker.topics import TopicError

    R = m.AlterConfigsResponse
    responses = []
    for res in req.resources:
        out = R.AlterConfigsResourceResponse(
            error_code=ec.NONE, resource_type=res.resource_type, resource_name=res.resource_name
        )
        responses.append(out)
        if res.resource_type != ConfigResourceType.TOPIC:
            out.error_code = ec.INVALID_REQUEST
            out.error_message = "only topic configs can be altered"
            continue
        topic = broker.topics.topics.get(res.resource_name)
        changes: dict[str, str | None] = dict.fromkeys(topic.configs) if topic else {}
        changes.update({c.name: c.value for c in res.configs})
        try:
            await broker.topics.alter_configs(res.resource_name, changes, req.validate_only)
        except TopicError as e:
            out.error_code = e.code
            out.error_message = str(e)
    return R(throttle_time_ms=0, responses=responses)
