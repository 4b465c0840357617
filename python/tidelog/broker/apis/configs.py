"""DescribeConfigs (topics, and every broker setting with its source), AlterConfigs (replaces
the set) and IncrementalAlterConfigs (SET and DELETE)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tidelog.broker.apis._registry import (
    handles,
)
from tidelog.broker.apis._resolve import authorized, authorized_on_cluster
from tidelog.broker.config import is_sensitive
from tidelog.broker.controller import TopicError
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import (
    AclOperation,
    AclResourceType,
    AlterConfigOp,
    ConfigResourceType,
    ConfigSource,
)

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext


@handles(m.DescribeConfigsRequest, 0, 4)
async def describe_configs(ctx: RequestContext, req: m.DescribeConfigsRequest) -> m.DescribeConfigsResponse:
    broker = ctx.broker
    R = m.DescribeConfigsResponse
    results = []
    for res in req.resources:
        out = R.DescribeConfigsResult(
            error_code=ec.NONE, resource_type=res.resource_type, resource_name=res.resource_name, configs=[]
        )
        results.append(out)
        if (
            refusal := _refusal(ctx, res.resource_type, res.resource_name, AclOperation.DESCRIBE_CONFIGS)
        ) is not None:
            out.error_code = refusal
            continue
        if res.resource_type == ConfigResourceType.TOPIC:
            topic = broker.image.topic(res.resource_name)
            if topic is None:
                out.error_code = ec.UNKNOWN_TOPIC_OR_PARTITION
                continue
            values = broker.config.effective_topic_configs(topic.configs)
            topic_set, default = ConfigSource.DYNAMIC_TOPIC_CONFIG, ConfigSource.DEFAULT_CONFIG
            sources = {name: topic_set if name in topic.configs else default for name in values}
            read_only = False
        elif res.resource_type == ConfigResourceType.BROKER:  # every setting, configured or default
            described = broker.config.described(broker.endpoints)
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
                    is_sensitive=res.resource_type == ConfigResourceType.BROKER and is_sensitive(name),
                    synonyms=[],
                )
            )
    return R(throttle_time_ms=0, results=results)


AlterResponse = TypeVar("AlterResponse", m.AlterConfigsResponse, m.IncrementalAlterConfigsResponse)


class _Refused(Exception):
    """A resource's change refused before it reaches the topic manager."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _refusal(ctx: RequestContext, resource_type: int, name: str, operation: AclOperation) -> int | None:
    """TOPIC_ or CLUSTER_AUTHORIZATION_FAILED if the principal may not do ``operation`` on
    the topic, or on the cluster for a broker's configs; else None."""
    if resource_type == ConfigResourceType.TOPIC:
        if not authorized(ctx, operation, AclResourceType.TOPIC, name):
            return ec.TOPIC_AUTHORIZATION_FAILED
    elif not authorized_on_cluster(ctx, operation):
        return ec.CLUSTER_AUTHORIZATION_FAILED
    return None


async def _alter_each(
    ctx: RequestContext,
    req: m.AlterConfigsRequest | m.IncrementalAlterConfigsRequest,
    response: type[AlterResponse],
    changes_of: Callable[[Any], dict[str, str | None]],
) -> AlterResponse:
    """What both AlterConfigs APIs do per resource: topics only, the changes that
    ``changes_of(resource)`` makes (None: back to the default), one result each."""
    results = []
    for res in req.resources:
        out = response.AlterConfigsResourceResponse(
            error_code=ec.NONE, resource_type=res.resource_type, resource_name=res.resource_name
        )
        results.append(out)
        try:
            if (
                refusal := _refusal(ctx, res.resource_type, res.resource_name, AclOperation.ALTER_CONFIGS)
            ) is not None:
                raise _Refused(refusal, "Authorization failed.")
            if res.resource_type != ConfigResourceType.TOPIC:
                raise _Refused(ec.INVALID_REQUEST, "only topic configs can be altered")
            await ctx.broker.controller.alter_topic_configs(
                res.resource_name, changes_of(res), validate_only=req.validate_only
            )
        except (TopicError, _Refused) as e:
            out.error_code = e.code
            out.error_message = str(e)
    return response(throttle_time_ms=0, responses=results)


@handles(m.IncrementalAlterConfigsRequest, 0, 1)
async def incremental_alter_configs(
    ctx: RequestContext, req: m.IncrementalAlterConfigsRequest
) -> m.IncrementalAlterConfigsResponse:
    """SET and DELETE; APPEND and SUBTRACT apply to list configs, which topics here lack."""

    def changes(res: Any) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for c in res.configs:
            if c.config_operation == AlterConfigOp.SET:
                out[c.name] = c.value
            elif c.config_operation == AlterConfigOp.DELETE:
                out[c.name] = None
            else:
                raise _Refused(
                    ec.INVALID_REQUEST,
                    "APPEND and SUBTRACT apply to list configs, which topics here do not have",
                )
        return out

    return await _alter_each(ctx, req, m.IncrementalAlterConfigsResponse, changes)


@handles(m.AlterConfigsRequest, 0, 2)
async def alter_configs(ctx: RequestContext, req: m.AlterConfigsRequest) -> m.AlterConfigsResponse:
    """The non-incremental AlterConfigs: each resource's configs are replaced by those given
    (one not given returns to its default), as Kafka's legacy API does."""
    broker = ctx.broker

    def changes(res: Any) -> dict[str, str | None]:
        topic = broker.image.topic(res.resource_name)
        out: dict[str, str | None] = dict.fromkeys(topic.configs) if topic else {}
        out.update({c.name: c.value for c in res.configs})
        return out

    return await _alter_each(ctx, req, m.AlterConfigsResponse, changes)
