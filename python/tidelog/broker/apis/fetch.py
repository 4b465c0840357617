"""Fetch v4-12: long polls; records sent zero-copy from the segment file, except data not
yet CRC-checked since the log was opened (read through the checked path).

Consumers are served below the high watermark and woken when it moves. A follower (a
``replica_id`` of 0 or more) is served up to the log end offset and woken by appends; its
fetch offset is its log end offset, which the leader records (``Partition.follower_fetched``)
to move the high watermark and the ISR. ``current_leader_epoch`` is checked as Kafka does:
older than the leader's is FENCED_LEADER_EPOCH, newer is UNKNOWN_LEADER_EPOCH. From v12 a
fetch's ``last_fetched_epoch`` is checked against this log's epochs: a fetcher whose log
has diverged is answered at once with ``diverging_epoch`` (the epoch and end offset to
truncate to) and no records, and a follower's fetch offset is not counted then."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from tidelog.broker.apis._registry import (
    error_code_of,
    handles,
    log,
)
from tidelog.broker.apis._resolve import authorized_on_cluster, resolve_partition
from tidelog.broker.partition import Partition
from tidelog.broker.quotas import CONSUMER_BYTE_RATE
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import OffsetOutOfRangeError, TidelogError
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation
from tidelog.records import iter_batches

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext

#: A request's divergence verdicts by (topic, partition): see ``_divergence``.
Divergences = dict[tuple[str, int], tuple[int, int] | None]


@handles(m.FetchRequest, 4, 12)
async def fetch(ctx: RequestContext, req: m.FetchRequest) -> m.FetchResponse:
    deadline = trio.current_time() + max(0, req.max_wait_ms) / 1000
    follower = req.replica_id >= 0
    divergences: Divergences = {}
    # A consumer needs READ on each topic; a follower CLUSTER_ACTION on the cluster, for all.
    operation: AclOperation | None = None if follower else AclOperation.READ
    refusal = ec.NONE
    if follower and not authorized_on_cluster(ctx, AclOperation.CLUSTER_ACTION):
        refusal = ec.TOPIC_AUTHORIZATION_FAILED
    if follower and not refusal:
        _record_follower(ctx, req, divergences)
    while True:
        resp, total, events, diverged = _fetch_once(ctx, req, follower, divergences, operation, refusal)
        if (
            diverged
            or total >= max(1, req.min_bytes)
            or req.max_wait_ms <= 0
            or trio.current_time() >= deadline
            or not events
        ):
            if not follower and (throttle_ms := ctx.throttle(CONSUMER_BYTE_RATE, total)):
                # Over its quota: as Kafka, an empty answer (taken back from the rate) and
                # the time to wait.
                ctx.unthrottle(CONSUMER_BYTE_RATE, total)
                resp.responses = []
                resp.throttle_time_ms = throttle_ms
            if not follower:
                _count(ctx, resp)
            return resp
        waited_from = trio.current_time()
        with trio.move_on_at(deadline):
            async with trio.open_nursery() as nursery:

                async def wake(ev: trio.Event) -> None:
                    await ev.wait()
                    nursery.cancel_scope.cancel()

                for ev in events:
                    nursery.start_soon(wake, ev)
        ctx.timing.remote += trio.current_time() - waited_from


def _count(ctx: RequestContext, resp: m.FetchResponse) -> None:
    """A consumer's fetch in the topic metrics: bytes sent, partitions that failed."""
    metrics = ctx.broker.metrics
    for t in resp.responses:
        counters = metrics.topics[t.topic]
        for p in t.partitions:
            records = p.records
            counters.bytes_out += records.length if hasattr(records, "length") else len(records or b"")
            counters.failed_fetch_requests += p.error_code != ec.NONE


def _record_follower(ctx: RequestContext, req: m.FetchRequest, divergences: Divergences) -> None:
    """A follower's fetch offsets are its log end offsets: the leader takes them up once per
    request (a follower caught up to the high watermark is proposed for the ISR)."""
    for t in req.topics:
        for p in t.partitions:
            part, code = resolve_partition(ctx, t.topic, p.partition, None)
            if (
                part is not None
                and code == ec.NONE
                and part.check_leader_epoch(p.current_leader_epoch) == ec.NONE
                and _divergence(part, ctx.api_version, p, divergences) is None  # its end is not ours
                and part.follower_fetched(req.replica_id, p.fetch_offset)
            ):
                ctx.broker.replicas.isr_change_wanted()


def _fetch_once(
    ctx: RequestContext,
    req: m.FetchRequest,
    follower: bool,
    divergences: Divergences,
    operation: AclOperation | None,
    refusal: int,
) -> tuple[m.FetchResponse, int, list[trio.Event], bool]:
    """One pass over the request: the response, its bytes of records, what to wait on for
    more, and whether a partition diverged (answered at once, as Kafka does). ``operation``
    is what each topic needs; ``refusal``, if not NONE, answers every partition."""
    version = ctx.api_version
    R = m.FetchResponse
    budget = req.max_bytes if version >= 3 else 1 << 31
    if not follower:  # at most what the consumer's quota allows at once
        budget = int(min(budget, max(ctx.quota_window(CONSUMER_BYTE_RATE), 1)))
    total = 0
    diverged = False
    responses = []
    waiting = []
    for t in req.topics:
        name = t.topic
        parts = []
        for p in t.partitions:
            PD = R.FetchableTopicResponse.PartitionData
            res = PD(
                partition_index=p.partition,
                error_code=ec.NONE,
                high_watermark=-1,
                last_stable_offset=-1,
                log_start_offset=-1,
                aborted_transactions=[] if version >= 4 else None,
                preferred_read_replica=-1,
                records=b"",
            )
            parts.append(res)
            part, res.error_code = (
                (None, refusal) if refusal else resolve_partition(ctx, name, p.partition, operation)
            )
            if part is None:
                continue
            res.error_code = part.check_leader_epoch(p.current_leader_epoch)
            if res.error_code:
                continue
            hw = part.high_watermark
            res.high_watermark = res.last_stable_offset = hw
            res.log_start_offset = part.log_start_offset
            offset = p.fetch_offset
            end = part.log.end_offset if follower else hw  # what this fetcher may read
            if offset < part.log_start_offset:
                res.error_code = ec.OFFSET_OUT_OF_RANGE
                continue
            divergence = _divergence(part, version, p, divergences)
            if divergence is not None:
                epoch, epoch_end = divergence
                if epoch < 0:  # no epoch that old is left here
                    res.error_code = ec.OFFSET_OUT_OF_RANGE
                else:
                    res.diverging_epoch = PD.EpochEndOffset(epoch=epoch, end_offset=epoch_end)
                    diverged = True
                continue
            if offset > end:
                res.error_code = ec.OFFSET_OUT_OF_RANGE
                continue
            waiting.append(part.wait_for_append() if follower else part.wait_for_data())
            if offset == end:
                continue
            limit = min(p.partition_max_bytes, budget - total)
            if limit <= 0 and total > 0:
                continue
            try:
                if part.unverified(offset):
                    checked = _checked_read(part, offset, max(limit, 1), end)
                    res.records, total = checked, total + len(checked)
                    continue
                sl = part.log.slice(offset, max(limit, 1), end)
            except OffsetOutOfRangeError:
                res.error_code = ec.OFFSET_OUT_OF_RANGE
                continue
            except TidelogError as e:
                res.error_code = error_code_of(e)
                log.warning("fetch from %s-%d failed: %s", name, p.partition, e)
                continue
            if sl is not None:
                res.records = sl
                total += sl.length
        responses.append(R.FetchableTopicResponse(topic=name, partitions=parts))
    response = R(throttle_time_ms=0, error_code=ec.NONE, session_id=0, responses=responses)
    return response, total, waiting, diverged


def _divergence(
    part: Partition, version: int, p: m.FetchRequest.FetchTopic.FetchPartition, seen: Divergences
) -> tuple[int, int] | None:
    """Kafka's check of a fetch's ``last_fetched_epoch`` (v12+, when not -1): None if the
    fetcher's log can agree with this one up to its fetch offset; else (the largest epoch
    here not above its last one, where that epoch ends here), from which the fetcher
    truncates; (-1, -1) when no epoch that old is left here. Decided once per partition and
    request (kept in ``seen``): a long poll's later passes and the follower's bookkeeping
    reuse it."""
    if version < 12 or p.last_fetched_epoch < 0:
        return None
    key = (part.topic, part.index)
    if key not in seen:
        epoch, end = part.epochs.end_offset_for(p.last_fetched_epoch, part.log.end_offset)
        seen[key] = (epoch, end) if epoch < p.last_fetched_epoch or end < p.fetch_offset else None
    return seen[key]


def _checked_read(part: Partition, offset: int, max_bytes: int, end: int) -> bytes:
    """Whole batches from ``offset`` wholly below ``end``, each CRC-checked (the valid ones
    before a damaged one; CorruptRecordError if the first is damaged), for data this process
    did not check."""
    raw = part.log.read_raw(offset, max_bytes)
    headers = [h for h, _ in iter_batches(raw)]
    if headers:
        part.verified(offset, headers[-1].next_offset)
    below = [h for h in headers if h.next_offset <= end]
    return raw[: below[-1].position + below[-1].size] if below else b""
