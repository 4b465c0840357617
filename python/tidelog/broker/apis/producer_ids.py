"""InitProducerId (idempotent producers; transactional ids are refused with
TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and DescribeProducers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.broker.apis._registry import (
    handles,
    log,
)
from tidelog.broker.apis._resolve import authorized_on_cluster, resolve_partition
from tidelog.broker.controller import TopicError
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation, AclResourceType

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext


@handles(m.InitProducerIdRequest, 0, 4)
async def init_producer_id(ctx: RequestContext, req: m.InitProducerIdRequest) -> m.InitProducerIdResponse:
    broker, version = ctx.broker, ctx.api_version
    R = m.InitProducerIdResponse
    if req.transactional_id is not None:
        log.info(
            "refused InitProducerId for transactional id %r: transactions are not supported",
            req.transactional_id,
        )
        return R(error_code=ec.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, producer_id=-1, producer_epoch=-1)
    session = ctx.session
    if not authorized_on_cluster(
        ctx, AclOperation.IDEMPOTENT_WRITE
    ) and not ctx.broker.authorizer.authorize_any(
        session.principal, session.peer_host, AclOperation.WRITE, AclResourceType.TOPIC
    ):  # as Kafka 3+: an idempotent producer needs IDEMPOTENT_WRITE, or WRITE on some topic
        return R(error_code=ec.CLUSTER_AUTHORIZATION_FAILED, producer_id=-1, producer_epoch=-1)
    if version >= 3 and req.producer_id >= 0:
        return R(
            error_code=ec.NONE, producer_id=req.producer_id, producer_epoch=(req.producer_epoch + 1) & 0x7FFF
        )
    try:
        pid = await broker.controller.next_producer_id()
    except TopicError as e:
        # The id store (etcd) did not answer: a retriable error, as Kafka's when its
        # producer-id manager cannot get a block.
        log.warning("InitProducerId: %s", e)
        return R(error_code=ec.COORDINATOR_NOT_AVAILABLE, producer_id=-1, producer_epoch=-1)
    return R(error_code=ec.NONE, producer_id=pid, producer_epoch=0)


@handles(m.DescribeProducersRequest, 0, 0)
async def describe_producers(
    ctx: RequestContext, req: m.DescribeProducersRequest
) -> m.DescribeProducersResponse:
    """The idempotent producers each partition remembers (none is transactional here)."""
    R = m.DescribeProducersResponse
    T = R.TopicResponse
    topics = []
    for t in req.topics:
        parts = []
        for i in t.partition_indexes:
            res = T.PartitionResponse(partition_index=i, error_code=ec.NONE, active_producers=[])
            parts.append(res)
            part, res.error_code = resolve_partition(ctx, t.name, i, AclOperation.READ)
            if part is None:
                continue
            res.active_producers = [
                T.PartitionResponse.ProducerState(
                    producer_id=pid,
                    producer_epoch=entry.epoch,
                    last_sequence=entry.last_sequence,
                    last_timestamp=entry.last_timestamp,
                    coordinator_epoch=-1,
                    current_txn_start_offset=-1,
                )
                for pid, entry in sorted(part.producer_state.producers.items())
            ]
        topics.append(T(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)
