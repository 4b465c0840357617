"""The one way a handler turns a topic and partition named in a request into this broker's
partition, or into the error code the client gets for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.broker.authorizer import SUPPORTED_OPERATIONS
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol.constants import CLUSTER_NAME, AclOperation, AclResourceType

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext
    from tidelog.broker.partition import Partition


def resolve_partition(
    ctx: RequestContext, topic: str, index: int, operation: AclOperation | None, *, needs_leader: bool = True
) -> tuple[Partition | None, int]:
    """(the partition, NONE), or (None, why), checked in Kafka's order:
    TOPIC_AUTHORIZATION_FAILED when the principal may not do ``operation`` on the topic (None:
    the caller authorized the request as a whole, as a follower's fetch),
    UNKNOWN_TOPIC_OR_PARTITION when the image has no such partition, NOT_LEADER_OR_FOLLOWER
    when another broker leads it, KAFKA_STORAGE_ERROR when its log is offline here.
    ``needs_leader=False`` (an offset commit names partitions it does not touch): any
    partition the image has is NONE, with the local partition if there is one."""
    broker = ctx.broker
    if operation is not None and not authorized(ctx, operation, AclResourceType.TOPIC, topic):
        return None, ec.TOPIC_AUTHORIZATION_FAILED
    meta = broker.image.partition(topic, index)
    if meta is None:
        return None, ec.UNKNOWN_TOPIC_OR_PARTITION
    part = broker.replicas.partition(topic, index)
    if not needs_leader:
        return part, ec.NONE
    if meta.leader != broker.config.node_id or broker.fenced:
        return None, ec.NOT_LEADER_OR_FOLLOWER
    return (part, ec.NONE) if part is not None else (None, broker.replicas.missing_code(topic, index))


def authorized(
    ctx: RequestContext, operation: AclOperation, resource_type: AclResourceType, name: str
) -> bool:
    """Whether the request's principal, from its host, may do ``operation`` on the resource."""
    session = ctx.session
    return ctx.broker.authorizer.authorize(
        session.principal, session.peer_host, operation, resource_type, name
    )


def authorized_operations(ctx: RequestContext, resource_type: AclResourceType, name: str) -> int:
    """What the principal may do to the resource, as the ``*_authorized_operations`` fields
    carry it: bit ``operation`` set for each operation of ``SUPPORTED_OPERATIONS`` allowed."""
    allowed = (op for op in SUPPORTED_OPERATIONS[resource_type] if authorized(ctx, op, resource_type, name))
    return sum(1 << op for op in allowed)


def authorized_on_cluster(ctx: RequestContext, operation: AclOperation) -> bool:
    """Whether the principal may do ``operation`` on the cluster (admin requests)."""
    return authorized(ctx, operation, AclResourceType.CLUSTER, CLUSTER_NAME)


def authorized_on_group(ctx: RequestContext, operation: AclOperation, group_id: str) -> bool:
    return authorized(ctx, operation, AclResourceType.GROUP, group_id)
