"""The classic consumer-group protocol: FindCoordinator (groups only),
Join/Sync/Heartbeat/Leave, offsets commit/fetch/delete, Describe/List/DeleteGroups; the
state machine is in broker/groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.broker.apis._registry import (
    TRANSACTIONS_UNSUPPORTED,
    handles,
    log,
)
from tidelog.broker.apis._resolve import (
    authorized,
    authorized_on_cluster,
    authorized_on_group,
    authorized_operations,
    resolve_partition,
)
from tidelog.broker.groups.store import TOPIC as OFFSETS_TOPIC
from tidelog.broker.groups.store import OffsetEntry
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation, AclResourceType

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext


@handles(m.FindCoordinatorRequest, 0, 4)
async def find_coordinator(ctx: RequestContext, req: m.FindCoordinatorRequest) -> m.FindCoordinatorResponse:
    broker, version = ctx.broker, ctx.api_version
    await broker.groups.store.ensure_topic()
    R = m.FindCoordinatorResponse
    keys = req.coordinator_keys if version >= 4 else [req.key]

    def answer(key: str) -> tuple[int, str | None, int, str, int]:
        """(error, message, node id, host, port) of ``key``'s coordinator: the leader of
        the group's ``__consumer_offsets`` partition, at its endpoint for this listener."""
        if req.key_type != 0:
            # Not COORDINATOR_NOT_AVAILABLE: clients retry that until they time out. This
            # error is fatal in every client, so a transactional producer fails at once.
            log.info("refused a transaction coordinator for %r: transactions are not supported", key)
            return ec.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, TRANSACTIONS_UNSUPPORTED, -1, "", -1
        if not authorized_on_group(ctx, AclOperation.DESCRIBE, key):
            return ec.GROUP_AUTHORIZATION_FAILED, None, -1, "", -1
        image = broker.image
        part = image.partition(OFFSETS_TOPIC, broker.groups.store.partition_of(key))
        leader = image.brokers.get(part.leader) if part is not None else None
        endpoint = leader.endpoint(ctx.session.listener) if leader is not None else None
        offline_here = (
            part is not None
            and part.leader == broker.config.node_id
            and broker.replicas.partition(OFFSETS_TOPIC, part.index) is None
        )
        if leader is None or endpoint is None or offline_here:
            return ec.COORDINATOR_NOT_AVAILABLE, None, -1, "", -1
        return ec.NONE, None, leader.node_id, endpoint.host, endpoint.port

    if version < 4:
        code, message, node_id, host, port = answer(req.key)
        return R(error_code=code, error_message=message, node_id=node_id, host=host, port=port)
    coordinators = []
    for key in keys:
        code, message, node_id, host, port = answer(key)
        coordinators.append(
            R.Coordinator(
                key=key, node_id=node_id, host=host, port=port, error_code=code, error_message=message
            )
        )
    return R(coordinators=coordinators)


@handles(m.JoinGroupRequest, 0, 7)
async def join_group(ctx: RequestContext, req: m.JoinGroupRequest) -> m.JoinGroupResponse:
    broker, version = ctx.broker, ctx.api_version
    if not authorized_on_group(ctx, AclOperation.READ, req.group_id):
        return m.JoinGroupResponse(
            error_code=ec.GROUP_AUTHORIZATION_FAILED, generation_id=-1, leader="", member_id="", members=[]
        )
    await broker.groups.store.ensure_topic()
    return await broker.groups.join(req, version, ctx.client_id or "", f"/{ctx.session.peer_host}")


@handles(m.SyncGroupRequest, 0, 5)
async def sync_group(ctx: RequestContext, req: m.SyncGroupRequest) -> m.SyncGroupResponse:
    broker, version = ctx.broker, ctx.api_version
    if not authorized_on_group(ctx, AclOperation.READ, req.group_id):
        return m.SyncGroupResponse(error_code=ec.GROUP_AUTHORIZATION_FAILED, assignment=b"")
    await broker.groups.store.ensure_topic()
    return await broker.groups.sync(req, version)


@handles(m.HeartbeatRequest, 0, 4)
async def heartbeat(ctx: RequestContext, req: m.HeartbeatRequest) -> m.HeartbeatResponse:
    if not authorized_on_group(ctx, AclOperation.READ, req.group_id):
        return m.HeartbeatResponse(error_code=ec.GROUP_AUTHORIZATION_FAILED)
    return m.HeartbeatResponse(error_code=ctx.broker.groups.heartbeat(req))


@handles(m.LeaveGroupRequest, 0, 4)
async def leave_group(ctx: RequestContext, req: m.LeaveGroupRequest) -> m.LeaveGroupResponse:
    broker, version = ctx.broker, ctx.api_version
    R = m.LeaveGroupResponse
    if not authorized_on_group(ctx, AclOperation.READ, req.group_id):
        return R(error_code=ec.GROUP_AUTHORIZATION_FAILED, members=[])
    await broker.groups.store.ensure_topic()
    if version < 3:
        (code,) = broker.groups.leave(req.group_id, [(req.member_id, None)])
        return R(error_code=code)
    members = [(mi.member_id, mi.group_instance_id) for mi in req.members]
    codes = broker.groups.leave(req.group_id, members)
    return R(
        error_code=ec.NONE,
        members=[
            R.MemberResponse(member_id=mid, group_instance_id=inst, error_code=code)
            for (mid, inst), code in zip(members, codes, strict=True)
        ],
    )


@handles(m.OffsetCommitRequest, 2, 8)
async def offset_commit(ctx: RequestContext, req: m.OffsetCommitRequest) -> m.OffsetCommitResponse:
    broker, version = ctx.broker, ctx.api_version
    await broker.groups.store.ensure_topic()
    R = m.OffsetCommitResponse
    code: int = ec.GROUP_AUTHORIZATION_FAILED
    if authorized_on_group(ctx, AclOperation.READ, req.group_id):
        code = broker.groups.commit_check(req, version)
    now = ctx.clock.wall_ms()
    entries = []
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            pcode = (
                code
                or resolve_partition(ctx, t.name, p.partition_index, AclOperation.READ, needs_leader=False)[1]
            )
            if not pcode:
                entries.append(
                    (
                        t.name,
                        p.partition_index,
                        OffsetEntry(p.committed_offset, p.committed_leader_epoch, p.committed_metadata, now),
                    )
                )
            parts.append(
                R.OffsetCommitResponseTopic.OffsetCommitResponsePartition(
                    partition_index=p.partition_index, error_code=pcode
                )
            )
        topics.append(R.OffsetCommitResponseTopic(name=t.name, partitions=parts))
    if entries:
        try:
            await broker.groups.commit(req.group_id, entries)
        except TidelogError as e:
            for rt in topics:
                for rp in rt.partitions:
                    rp.error_code = rp.error_code or e.error_code
    return R(throttle_time_ms=0, topics=topics)


@handles(m.OffsetFetchRequest, 1, 7)
async def offset_fetch(ctx: RequestContext, req: m.OffsetFetchRequest) -> m.OffsetFetchResponse:
    broker = ctx.broker
    R = m.OffsetFetchResponse
    # Not coordinated here: the error at the top (v2+) and on every partition (v1).
    code: int = ec.GROUP_AUTHORIZATION_FAILED
    if authorized_on_group(ctx, AclOperation.DESCRIBE, req.group_id):
        code = broker.groups.coordinator_error(req.group_id)
    offsets = {} if code else broker.groups.fetch(req.group_id)

    def described(topic: str) -> bool:
        return authorized(ctx, AclOperation.DESCRIBE, AclResourceType.TOPIC, topic)

    if req.topics is None:  # every topic with offsets, but only those the principal may see
        wanted: dict[str, list[int]] = {}
        for topic, partition in sorted(offsets):
            if described(topic):
                wanted.setdefault(topic, []).append(partition)
    else:
        wanted = {t.name: list(t.partition_indexes) for t in req.topics}
    topics = []
    for name, partitions in wanted.items():
        parts = []
        hidden = not described(name)
        for p in partitions:
            e = None if hidden else offsets.get((name, p))
            parts.append(
                R.OffsetFetchResponseTopic.OffsetFetchResponsePartition(
                    partition_index=p,
                    committed_offset=e.offset if e else -1,
                    committed_leader_epoch=e.leader_epoch if e else -1,
                    metadata=e.metadata if e else "",
                    error_code=code or (ec.TOPIC_AUTHORIZATION_FAILED if hidden else ec.NONE),
                )
            )
        topics.append(R.OffsetFetchResponseTopic(name=name, partitions=parts))
    return R(throttle_time_ms=0, topics=topics, error_code=code)


@handles(m.DescribeGroupsRequest, 0, 5)
async def describe_groups(ctx: RequestContext, req: m.DescribeGroupsRequest) -> m.DescribeGroupsResponse:
    broker = ctx.broker
    R = m.DescribeGroupsResponse
    out = []
    for group_id in req.groups:
        g = broker.groups.groups.get(group_id)
        code: int = ec.GROUP_AUTHORIZATION_FAILED
        if authorized_on_group(ctx, AclOperation.DESCRIBE, group_id):
            code = broker.groups.coordinator_error(group_id)
        if g is None or code:
            out.append(
                R.DescribedGroup(
                    error_code=code,
                    group_id=group_id,
                    group_state="Dead",
                    protocol_type="",
                    protocol_data="",
                    members=[],
                )
            )
        else:
            members = [
                R.DescribedGroup.DescribedGroupMember(
                    member_id=mb.member_id,
                    group_instance_id=mb.group_instance_id,
                    client_id=mb.client_id,
                    client_host=mb.client_host,
                    member_metadata=mb.metadata_for(g.protocol_name),
                    member_assignment=mb.assignment,
                )
                for mb in g.members.values()
            ]
            out.append(
                R.DescribedGroup(
                    error_code=ec.NONE,
                    group_id=group_id,
                    group_state=g.state,
                    protocol_type=g.protocol_type or "",
                    protocol_data=g.protocol_name or "",
                    members=members,
                )
            )
        if ctx.api_version >= 3 and req.include_authorized_operations and not code:
            out[-1].authorized_operations = authorized_operations(ctx, AclResourceType.GROUP, group_id)
    return R(throttle_time_ms=0, groups=out)


@handles(m.ListGroupsRequest, 0, 4)
async def list_groups(ctx: RequestContext, req: m.ListGroupsRequest) -> m.ListGroupsResponse:
    broker, version = ctx.broker, ctx.api_version
    R = m.ListGroupsResponse
    states = set(req.states_filter) if version >= 4 and req.states_filter else None
    everything = authorized_on_cluster(ctx, AclOperation.DESCRIBE)
    return R(
        error_code=ec.NONE,
        groups=[
            R.ListedGroup(group_id=g.group_id, protocol_type=g.protocol_type or "", group_state=g.state)
            for g in broker.groups.groups.values()
            if (states is None or g.state in states)
            and (everything or authorized_on_group(ctx, AclOperation.DESCRIBE, g.group_id))
        ],
    )


@handles(m.DeleteGroupsRequest, 0, 2)
async def delete_groups(ctx: RequestContext, req: m.DeleteGroupsRequest) -> m.DeleteGroupsResponse:
    broker = ctx.broker
    await broker.groups.store.ensure_topic()
    R = m.DeleteGroupsResponse
    return R(
        throttle_time_ms=0,
        results=[
            R.DeletableGroupResult(
                group_id=g,
                error_code=broker.groups.delete_group(g)
                if authorized_on_group(ctx, AclOperation.DELETE, g)
                else ec.GROUP_AUTHORIZATION_FAILED,
            )
            for g in req.groups_names
        ],
    )


@handles(m.OffsetDeleteRequest, 0, 0)
async def offset_delete(ctx: RequestContext, req: m.OffsetDeleteRequest) -> m.OffsetDeleteResponse:
    broker = ctx.broker
    await broker.groups.store.ensure_topic()
    R = m.OffsetDeleteResponse
    if not authorized_on_group(ctx, AclOperation.DELETE, req.group_id):
        return R(error_code=ec.GROUP_AUTHORIZATION_FAILED, topics=[])
    if code := broker.groups.coordinator_error(req.group_id):
        return R(error_code=code, topics=[])
    g = broker.groups.groups.get(req.group_id)
    if g is None:
        return R(error_code=ec.GROUP_ID_NOT_FOUND, topics=[])
    subscribed = broker.groups.subscribed_topics(g)
    topics = []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            code = ec.GROUP_SUBSCRIBED_TO_TOPIC if t.name in subscribed else ec.NONE
            if not authorized(ctx, AclOperation.READ, AclResourceType.TOPIC, t.name):
                code = ec.TOPIC_AUTHORIZATION_FAILED
            if not code and (t.name, p.partition_index) in g.offsets:
                del g.offsets[(t.name, p.partition_index)]
                broker.groups.store.append_nowait(
                    g.group_id,
                    [(broker.groups.store.offset_key(g.group_id, t.name, p.partition_index), None)],
                )
            parts.append(
                R.OffsetDeleteResponseTopic.OffsetDeleteResponsePartition(
                    partition_index=p.partition_index, error_code=code
                )
            )
        topics.append(R.OffsetDeleteResponseTopic(name=t.name, partitions=parts))
    return R(error_code=ec.NONE, throttle_time_ms=0, topics=topics)
