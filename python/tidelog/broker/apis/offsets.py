"""ListOffsets (earliest, latest, max timestamp, v8-9 earliest-local and latest-tiered, by
time), DeleteRecords, and OffsetForLeaderEpoch (the end offset of a leader epoch, from the
partition's leader-epoch cache: what a follower truncates to before it fetches from a new
leader, and what clients check their positions against)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from tidelog.broker.apis._registry import (
    error_code_of,
    handles,
)
from tidelog.broker.apis._resolve import authorized_on_cluster, resolve_partition
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation, OffsetSpec

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext


@handles(m.ListOffsetsRequest, 1, 9)
async def list_offsets(ctx: RequestContext, req: m.ListOffsetsRequest) -> m.ListOffsetsResponse:
    R = m.ListOffsetsResponse
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            LP = R.ListOffsetsTopicResponse.ListOffsetsPartitionResponse
            res = LP(
                partition_index=p.partition_index,
                error_code=ec.NONE,
                timestamp=-1,
                offset=-1,
                leader_epoch=-1,
            )
            parts.append(res)
            part, res.error_code = resolve_partition(ctx, t.name, p.partition_index, AclOperation.DESCRIBE)
            if part is None:
                continue
            res.error_code = part.check_leader_epoch(p.current_leader_epoch)
            if res.error_code:
                continue
            res.leader_epoch = part.leader_epoch
            ts = p.timestamp
            if ts in (OffsetSpec.EARLIEST, OffsetSpec.EARLIEST_LOCAL):  # all of the log is local
                res.offset = part.log_start_offset
            elif ts == OffsetSpec.LATEST_TIERED:  # nothing is tiered
                res.offset = -1
            elif ts == OffsetSpec.LATEST:
                res.offset = part.high_watermark
            else:
                found = (
                    _max_timestamp(part) if ts == OffsetSpec.MAX_TIMESTAMP else part.log.offset_for_time(ts)
                )
                if found is not None and found[0] < part.high_watermark:  # consumers see no more
                    res.offset, res.timestamp = found
        topics.append(R.ListOffsetsTopicResponse(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


def _max_timestamp(part: Any) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record with the largest timestamp: the segments know
    their largest timestamps, and the time index finds the record."""
    ts = part.log.max_timestamp
    return None if ts < 0 else part.log.offset_for_time(ts)


@handles(m.DeleteRecordsRequest, 0, 2)
async def delete_records(ctx: RequestContext, req: m.DeleteRecordsRequest) -> m.DeleteRecordsResponse:
    R = m.DeleteRecordsResponse
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            res = R.DeleteRecordsTopicResult.DeleteRecordsPartitionResult(
                partition_index=p.partition_index, low_watermark=-1, error_code=ec.NONE
            )
            parts.append(res)
            part, res.error_code = resolve_partition(ctx, t.name, p.partition_index, AclOperation.DELETE)
            if part is None:
                continue
            target = part.high_watermark if p.offset == -1 else p.offset  # -1: all there is
            try:
                await trio.to_thread.run_sync(part.log.delete_records_before, target)
                res.low_watermark = part.log_start_offset
            except TidelogError as e:
                res.error_code = error_code_of(e)
        topics.append(R.DeleteRecordsTopicResult(name=t.name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)


@handles(m.OffsetForLeaderEpochRequest, 0, 4)
async def offset_for_leader_epoch(
    ctx: RequestContext, req: m.OffsetForLeaderEpochRequest
) -> m.OffsetForLeaderEpochResponse:
    R = m.OffsetForLeaderEpochResponse
    E = R.OffsetForLeaderTopicResult.EpochEndOffset
    # A follower (replica_id >= 0, v3+) needs CLUSTER_ACTION on the cluster; a client DESCRIBE.
    operation: AclOperation | None = AclOperation.DESCRIBE
    refusal = ec.NONE
    if ctx.api_version >= 3 and req.replica_id >= 0:
        operation = None
        if not authorized_on_cluster(ctx, AclOperation.CLUSTER_ACTION):
            refusal = ec.CLUSTER_AUTHORIZATION_FAILED
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            res = E(error_code=ec.NONE, partition=p.partition, leader_epoch=-1, end_offset=-1)
            parts.append(res)
            part, res.error_code = (
                (None, refusal) if refusal else resolve_partition(ctx, t.topic, p.partition, operation)
            )
            if part is None:
                continue
            res.error_code = part.check_leader_epoch(p.current_leader_epoch)
            if not res.error_code:
                res.leader_epoch, res.end_offset = part.epochs.end_offset_for(
                    p.leader_epoch, part.log.end_offset
                )
        topics.append(R.OffsetForLeaderTopicResult(topic=t.topic, partitions=parts))
    return R(throttle_time_ms=0, topics=topics)
