"""The one way a handler turns a topic and partition named in a request into this broker's
partition, or into the error code the client gets for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol.constants import AclOperation, AclResourceType

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext
    from tidelog.broker.partition import Partition


def resolve_partition(
    ctx: RequestContext, topic: str, index: int, operation: AclOperation
) -> tuple[Partition | None, int]:
    """(the partition, NONE), or (None, why): TOPIC_AUTHORIZATION_FAILED when the principal
    may not do ``operation`` on the topic, KAFKA_STORAGE_ERROR for an offline partition,
    UNKNOWN_TOPIC_OR_PARTITION otherwise (NOT_LEADER_OR_FOLLOWER comes with replication)."""
    session, replicas = ctx.session, ctx.broker.replicas
    if not ctx.broker.authorizer.authorize(
        session.principal, session.peer_host, operation, AclResourceType.TOPIC, topic
    ):
        return None, ec.TOPIC_AUTHORIZATION_FAILED
    part = replicas.partition(topic, index)
    return (part, ec.NONE) if part is not None else (None, replicas.missing_code(topic, index))
