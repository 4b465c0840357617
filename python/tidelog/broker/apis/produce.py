"""Produce: v3+ (0-2 are advertised for old clients and answered UNSUPPORTED_VERSION), acks
0/1/all, idempotent batches sequence-checked per producer, internal topics refused; acks=0
failures close the connection, as Kafka.

acks=all: refused before the append with NOT_ENOUGH_REPLICAS when the ISR is smaller than
``min.insync.replicas``; answered once the high watermark passes the batch (every ISR member
has it), with NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum meanwhile,
or REQUEST_TIMED_OUT at the request's timeout. The partitions of one request wait together."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from tidelog.broker.apis._registry import (
    RefusedWithoutResponse,
    handles,
    log,
)
from tidelog.broker.apis._resolve import resolve_partition
from tidelog.broker.apis.topics import auto_create
from tidelog.broker.partition import OutOfOrder, Partition
from tidelog.broker.quotas import PRODUCER_BYTE_RATE
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext

PR = m.ProduceResponse.TopicProduceResponse.PartitionProduceResponse


@handles(m.ProduceRequest, 0, 9)
async def produce(ctx: RequestContext, req: m.ProduceRequest) -> m.ProduceResponse | None:
    broker, version = ctx.broker, ctx.api_version
    R = m.ProduceResponse
    if version < 3:
        code: int = ec.UNSUPPORTED_VERSION
        return R(
            responses=[
                R.TopicProduceResponse(
                    name=t.name,
                    partition_responses=[
                        R.TopicProduceResponse.PartitionProduceResponse(
                            index=p.index, error_code=code, base_offset=-1
                        )
                        for p in t.partition_data
                    ],
                )
                for t in req.topic_data
            ]
        )
    if req.transactional_id is not None:
        log.info("refused transactional produce from %s", ctx.client_id)
    acks = req.acks
    out = []
    replicating: list[tuple[PR, Partition, int]] = []  # acks=all: (answer, partition, last offset)
    for t in req.topic_data:
        parts = []
        for p in t.partition_data:
            res = PR(
                index=p.index, error_code=ec.NONE, base_offset=-1, log_append_time_ms=-1, log_start_offset=-1
            )
            parts.append(res)
            if broker.config.auto_create_topics_enable and broker.image.topic(t.name) is None:
                topic, res.error_code = await auto_create(ctx, t.name)
                if topic is None:
                    continue
            part, res.error_code = resolve_partition(ctx, t.name, p.index, AclOperation.WRITE)
            if part is None:
                continue
            if acks not in (0, 1, -1):
                res.error_code = ec.INVALID_REQUIRED_ACKS
                continue
            if (topic := broker.image.topic(t.name)) is not None and topic.internal:
                # As Kafka's ReplicaManager: only the broker itself writes internal topics.
                res.error_code = ec.INVALID_TOPIC_EXCEPTION
                res.error_message = f"cannot append to internal topic {t.name}" if version >= 8 else None
                continue
            if req.transactional_id is not None:
                res.error_code = ec.INVALID_REQUEST
                continue
            if acks == -1:
                res.error_code = part.check_insync()
                if res.error_code:
                    continue
            try:
                res.base_offset, res.log_append_time_ms, count = await part.append_as_leader(p.records)
                res.log_start_offset = part.log_start_offset
                broker.metrics.produced(t.name, count, len(p.records or b""))
                if acks == -1:
                    replicating.append((res, part, res.base_offset + max(count, 1) - 1))
            except OutOfOrder as e:
                res.error_code = e.code
                broker.metrics.produce_failed(t.name, len(p.records or b""))
            except TidelogError as e:
                res.error_code = e.error_code
                res.error_message = str(e) if version >= 8 else None
                broker.metrics.produce_failed(t.name, len(p.records or b""))
                log.info("produce to %s-%d refused: %s", t.name, p.index, e)
        out.append(R.TopicProduceResponse(name=t.name, partition_responses=parts))
    if replicating:
        waited_from = trio.current_time()
        await _replicated(replicating, waited_from + max(0, req.timeout_ms) / 1000)
        ctx.timing.remote += trio.current_time() - waited_from
    throttle_ms = ctx.throttle(PRODUCER_BYTE_RATE, ctx.size)
    if acks == 0:
        failed = [(t.name, p.index, p.error_code) for t in out for p in t.partition_responses if p.error_code]
        if failed:
            # No response exists to carry the error: Kafka closes the connection instead.
            raise RefusedWithoutResponse(f"acks=0 produce failed: {failed[:3]}")
        return None
    return R(responses=out, throttle_time_ms=throttle_ms)


async def _replicated(waits: list[tuple[PR, Partition, int]], deadline: float) -> None:
    """Waits until every ISR member has each partition's batch, or the deadline."""

    async def wait(res: PR, part: Partition, last: int) -> None:
        res.error_code = await part.wait_for_high_watermark(last, deadline)
        if res.error_code:
            res.base_offset = -1

    async with trio.open_nursery() as nursery:
        for w in waits:
            nursery.start_soon(wait, *w)
