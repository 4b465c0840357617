"""The group coordinator (Kafka's classic protocol): group states Empty, PreparingRebalance,
CompletingRebalance, Stable and Dead; rebalances on join, leave and session expiry; the
protocol chosen by vote; static membership; committed offsets. Member metadata and
assignments are opaque bytes: the leader client assigns.

Runs on the broker's event loop; every wait is bounded by a rebalance or session timeout."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections import Counter
from typing import Any

import trio

from tidelog.broker.clock import Clock
from tidelog.broker.config import BrokerConfig
from tidelog.broker.groups.store import TOPIC, OffsetEntry, OffsetsStore
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m

log = logging.getLogger("tidelog.broker.groups")


EMPTY, PREPARING, COMPLETING, STABLE, DEAD = (
    "Empty",
    "PreparingRebalance",
    "CompletingRebalance",
    "Stable",
    "Dead",
)


class Reply:
    """A response a waiting JoinGroup or SyncGroup gets when the group decides."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value: Any = None

    def set(self, value: Any) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()


@dataclasses.dataclass
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    last_seen: float = 0.0
    join: Reply | None = None
    sync: Reply | None = None

    def metadata_for(self, protocol: str | None) -> bytes:
        return next((md for name, md in self.protocols if name == protocol), b"")


@dataclasses.dataclass
class Group:
    group_id: str
    state: str = EMPTY
    generation: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str | None = None
    members: dict[str, Member] = dataclasses.field(default_factory=dict)
    pending: dict[str, float] = dataclasses.field(default_factory=dict)  # member ids awaiting their join
    static: dict[str, str] = dataclasses.field(default_factory=dict)  # group instance id -> member id
    offsets: dict[tuple[str, int], OffsetEntry] = dataclasses.field(default_factory=dict)
    rebalance_deadline: float = 0.0
    joined: trio.Event = dataclasses.field(default_factory=trio.Event)
    completer_running: bool = False


class Coordinator:
    def __init__(self, store: OffsetsStore, config: BrokerConfig, nursery_holder: Any, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.node_id = config.node_id
        self._loaded: set[int] = set()  # __consumer_offsets partitions whose groups are here
        self.groups: dict[str, Group] = {}
        #: Rebalances completed (a generation with members) and offsets committed, for metrics.
        self.rebalances = 0
        self.offset_commits = 0
        self.initial_delay = int(config.setting("group.initial.rebalance.delay.ms")) / 1000
        self.min_session = int(config.setting("group.min.session.timeout.ms"))
        self.max_session = int(config.setting("group.max.session.timeout.ms"))
        self.retention_ms = int(config.setting("offsets.retention.minutes")) * 60_000
        self._nursery_holder = nursery_holder

    # ---- state ----

    async def on_leadership(self, topic: str, index: int, leader: bool) -> None:
        """Loads the groups of a ``__consumer_offsets`` partition (read in a worker thread)
        when this broker becomes its leader, and forgets them when it stops being it, so that
        a group's coordinator can move with its partition."""
        if topic != TOPIC:
            return
        self._loaded.discard(index)
        for group_id in [g for g in self.groups if self.store.partition_of(g) == index]:
            del self.groups[group_id]
        part = self.store.replicas.partition(TOPIC, index)
        if not leader or part is None:  # offline: its groups stay unknown here until it is back
            return
        offsets, groups = await trio.to_thread.run_sync(self.store.read_partition, part)
        if not part.is_leader:  # lost again while it was read: the next call loads it
            return
        self._install(offsets, groups)
        self._loaded.add(index)
        if offsets or groups:
            log.info(
                "loaded %d groups and %d committed offsets from %s-%d",
                len(groups),
                len(offsets),
                TOPIC,
                index,
            )

    def coordinator_error(self, group_id: str) -> int:
        """NONE if this broker coordinates the group: it leads the group's
        ``__consumer_offsets`` partition (or that topic does not exist yet, and will be made
        here on first use). Else NOT_COORDINATOR (another broker leads it; clients ask
        FindCoordinator again), COORDINATOR_LOAD_IN_PROGRESS until its groups have been read
        from the log since this broker took the leadership, or COORDINATOR_NOT_AVAILABLE while
        its log is offline here."""
        replicas = self.store.replicas
        index = self.store.partition_of(group_id)
        part = replicas.image.partition(TOPIC, index)
        if part is None:
            return ec.NONE
        if part.leader != self.node_id:
            return ec.NOT_COORDINATOR
        if replicas.partition(TOPIC, index) is None:
            return ec.COORDINATOR_NOT_AVAILABLE
        # Until its groups are read from the log (a leadership just taken), none is answered.
        return ec.NONE if index in self._loaded else ec.COORDINATOR_LOAD_IN_PROGRESS

    def _install(self, offsets: dict[tuple[str, str, int], OffsetEntry], groups: dict[str, Any]) -> None:
        for (group_id, topic, partition), entry in offsets.items():
            self._group(group_id).offsets[(topic, partition)] = entry
        now = self.clock.monotonic()
        for group_id, value in groups.items():
            g = self._group(group_id)
            g.generation, g.protocol_type, g.protocol_name, g.leader = (
                value.generation,
                value.protocol_type,
                value.protocol,
                value.leader,
            )
            for mm in value.members:
                g.members[mm.member_id] = Member(
                    mm.member_id,
                    mm.group_instance_id,
                    mm.client_id,
                    mm.client_host,
                    mm.session_timeout,
                    mm.rebalance_timeout if mm.rebalance_timeout > 0 else mm.session_timeout,
                    [(value.protocol or "", mm.subscription)],
                    mm.assignment,
                    last_seen=now,
                )
                if mm.group_instance_id:
                    g.static[mm.group_instance_id] = mm.member_id
            g.state = STABLE if g.members else EMPTY

    def _group(self, group_id: str) -> Group:
        g = self.groups.get(group_id)
        if g is None:
            g = self.groups[group_id] = Group(group_id)
        return g

    def _persist_group(self, g: Group) -> None:
        V = m.GroupMetadataValue
        value = V(
            protocol_type=g.protocol_type or "",
            generation=g.generation,
            protocol=g.protocol_name,
            leader=g.leader,
            current_state_timestamp=self.clock.wall_ms(),
            members=[
                V.MemberMetadata(
                    member_id=mb.member_id,
                    group_instance_id=mb.group_instance_id,
                    client_id=mb.client_id,
                    client_host=mb.client_host,
                    rebalance_timeout=mb.rebalance_timeout_ms,
                    session_timeout=mb.session_timeout_ms,
                    subscription=mb.metadata_for(g.protocol_name),
                    assignment=mb.assignment,
                )
                for mb in g.members.values()
            ],
        )
        self.store.append_nowait(
            g.group_id, [(self.store.group_key(g.group_id), self.store.group_value(value))]
        )

    # ---- membership ----

    def _remove(self, g: Group, member_id: str, error: int, why: str) -> None:
        mb = g.members.pop(member_id, None)
        if mb is None:
            return
        log.info("group %s: member %s left (%s)", g.group_id, member_id, why)
        if mb.group_instance_id and g.static.get(mb.group_instance_id) == member_id:
            del g.static[mb.group_instance_id]
        for reply in (mb.join, mb.sync):
            if reply is not None:
                reply.set(error)

    def _prepare_rebalance(self, g: Group, why: str) -> None:
        if g.state == PREPARING:
            return
        log.info("group %s: rebalance (generation %d) because %s", g.group_id, g.generation, why)
        for mb in g.members.values():
            if mb.sync is not None:
                mb.sync.set(ec.REBALANCE_IN_PROGRESS)
                mb.sync = None
        first = g.state == EMPTY
        g.state = PREPARING
        timeout = max((mb.rebalance_timeout_ms for mb in g.members.values()), default=0) / 1000
        now = self.clock.monotonic()
        g.rebalance_deadline = now + max(timeout, self.initial_delay if first else 0)
        if not g.completer_running:
            g.completer_running = True
            self._nursery_holder().start_soon(
                self._complete_join, g, now + self.initial_delay if first else now
            )

    async def _complete_join(self, g: Group, not_before: float) -> None:
        """Ends the join phase when every member has rejoined (after the initial delay for a
        new group) or the rebalance timeout passes; members that did not rejoin are removed."""
        try:
            while True:
                now = self.clock.monotonic()
                all_in = all(mb.join is not None for mb in g.members.values()) and not g.pending
                if (all_in and now >= not_before) or now >= g.rebalance_deadline:
                    break
                g.joined = trio.Event()
                with self.clock.move_on_at(g.rebalance_deadline if all_in is False else not_before):
                    await g.joined.wait()
            for member_id in [mid for mid, mb in g.members.items() if mb.join is None]:
                self._remove(
                    g, member_id, ec.UNKNOWN_MEMBER_ID, "did not rejoin within the rebalance timeout"
                )
            g.pending.clear()
            self._finish_join(g)
        finally:
            g.completer_running = False

    def _finish_join(self, g: Group) -> None:
        g.generation += 1
        self.rebalances += bool(g.members)
        if not g.members:
            g.state, g.protocol_name, g.leader = EMPTY, None, None
            self._persist_group(g)
            return
        candidates = set.intersection(*({n for n, _ in mb.protocols} for mb in g.members.values()))
        votes = Counter(next(n for n, _ in mb.protocols if n in candidates) for mb in g.members.values())
        g.protocol_name = max(sorted(votes), key=lambda n: votes[n])
        if g.leader not in g.members:
            g.leader = next(iter(g.members))
        g.state = COMPLETING
        for mb in g.members.values():
            assert mb.join is not None
            mb.join.set(ec.NONE)
            mb.join = None
        log.info(
            "group %s: generation %d with %d members, protocol %s, leader %s",
            g.group_id,
            g.generation,
            len(g.members),
            g.protocol_name,
            g.leader,
        )

    def join_response(
        self, g: Group, member_id: str, version: int, error: int = ec.NONE
    ) -> m.JoinGroupResponse:
        R = m.JoinGroupResponse
        if error:
            return R(
                error_code=error,
                generation_id=-1,
                protocol_name=None if version >= 7 else "",
                leader="",
                member_id=member_id,
                members=[],
            )
        members = []
        if member_id == g.leader:
            members = [
                R.JoinGroupResponseMember(
                    member_id=mb.member_id,
                    group_instance_id=mb.group_instance_id,
                    metadata=mb.metadata_for(g.protocol_name),
                )
                for mb in g.members.values()
            ]
        return R(
            error_code=ec.NONE,
            generation_id=g.generation,
            protocol_type=g.protocol_type,
            protocol_name=g.protocol_name,
            leader=g.leader or "",
            member_id=member_id,
            members=members,
        )

    async def join(
        self, req: m.JoinGroupRequest, version: int, client_id: str, client_host: str
    ) -> m.JoinGroupResponse:
        group_id = req.group_id
        session = req.session_timeout_ms
        rebalance = req.rebalance_timeout_ms if version >= 1 and req.rebalance_timeout_ms > 0 else session
        instance = req.group_instance_id if version >= 5 else None
        if not group_id:
            return m.JoinGroupResponse(error_code=ec.INVALID_GROUP_ID, member_id=req.member_id)
        if code := self.coordinator_error(group_id):
            return m.JoinGroupResponse(error_code=code, member_id=req.member_id)
        if not self.min_session <= session <= self.max_session:
            return m.JoinGroupResponse(error_code=ec.INVALID_SESSION_TIMEOUT, member_id=req.member_id)
        g = self._group(group_id)
        if g.state == DEAD:
            return m.JoinGroupResponse(error_code=ec.COORDINATOR_NOT_AVAILABLE, member_id=req.member_id)
        protocols = [(p.name, bytes(p.metadata)) for p in req.protocols]
        if not protocols or (
            g.members
            and (
                g.protocol_type != req.protocol_type
                or not any(
                    name in {n for mb in g.members.values() for n, _ in mb.protocols} for name, _ in protocols
                )
            )
        ):
            return m.JoinGroupResponse(error_code=ec.INCONSISTENT_GROUP_PROTOCOL, member_id=req.member_id)
        member_id = req.member_id
        now = self.clock.monotonic()
        if instance is not None:
            known = g.static.get(instance)
            if known is not None and member_id and member_id != known:
                return self.join_response(g, member_id, version, ec.FENCED_INSTANCE_ID)
            if known is not None:
                # A static member rejoining: a new member id takes over the old assignment.
                old = g.members.pop(known)
                member_id = f"{instance}-{uuid.uuid4()}"
                old.member_id, old.protocols, old.last_seen = member_id, protocols, now
                for reply in (old.join, old.sync):
                    if reply is not None:
                        reply.set(ec.FENCED_INSTANCE_ID)
                old.join = old.sync = None
                g.members[member_id] = old
                g.static[instance] = member_id
                if g.leader == known:
                    g.leader = member_id
                if g.state == STABLE:
                    self._persist_group(g)
                    return self.join_response(g, member_id, version)
                mb = old
            else:
                member_id = member_id or f"{instance}-{uuid.uuid4()}"
                mb = None
        else:
            mb = g.members.get(member_id) if member_id else None
            if member_id and mb is None and member_id not in g.pending:
                return self.join_response(g, member_id, version, ec.UNKNOWN_MEMBER_ID)
            if not member_id:
                member_id = f"{client_id or 'member'}-{uuid.uuid4()}"
                if version >= 4:
                    g.pending[member_id] = now + session / 1000
                    return self.join_response(g, member_id, version, ec.MEMBER_ID_REQUIRED)
        g.pending.pop(member_id, None)
        if mb is None:
            mb = Member(
                member_id, instance, client_id, client_host, session, rebalance, protocols, last_seen=now
            )
            g.members[member_id] = mb
            if instance is not None:
                g.static[instance] = member_id
        elif g.state == STABLE and mb.protocols == protocols and member_id != g.leader:
            # Nothing changed for a follower of a stable group: no rebalance (as Kafka does).
            mb.last_seen = now
            return self.join_response(g, member_id, version)
        mb.protocols, mb.session_timeout_ms, mb.rebalance_timeout_ms, mb.last_seen = (
            protocols,
            session,
            rebalance,
            now,
        )
        g.protocol_type = req.protocol_type
        mb.join = Reply()
        reply = mb.join
        self._prepare_rebalance(g, f"member {member_id} joined")
        g.rebalance_deadline = max(g.rebalance_deadline, now + rebalance / 1000)
        g.joined.set()
        with trio.move_on_after(rebalance / 1000 + 5):
            await reply.event.wait()
        error = reply.value if reply.event.is_set() else ec.REBALANCE_IN_PROGRESS
        return self.join_response(g, member_id, version, error)

    async def sync(self, req: m.SyncGroupRequest, version: int) -> m.SyncGroupResponse:
        R = m.SyncGroupResponse
        if code := self.coordinator_error(req.group_id):
            return R(error_code=code, assignment=b"")
        g = self.groups.get(req.group_id)
        mb = g.members.get(req.member_id) if g else None
        if g is None or mb is None:
            return R(error_code=ec.UNKNOWN_MEMBER_ID, assignment=b"")
        if req.generation_id != g.generation:
            return R(error_code=ec.ILLEGAL_GENERATION, assignment=b"")
        if g.state == PREPARING:
            return R(error_code=ec.REBALANCE_IN_PROGRESS, assignment=b"")
        mb.last_seen = self.clock.monotonic()
        if g.state == COMPLETING:
            if req.member_id == g.leader:
                given = {a.member_id: bytes(a.assignment) for a in req.assignments}
                for other in g.members.values():
                    other.assignment = given.get(other.member_id, b"")
                g.state = STABLE
                self._persist_group(g)
                for other in g.members.values():
                    if other.sync is not None:
                        other.sync.set(ec.NONE)
                        other.sync = None
            else:
                mb.sync = Reply()
                reply = mb.sync
                with trio.move_on_after(mb.rebalance_timeout_ms / 1000 + 5):
                    await reply.event.wait()
                error = reply.value if reply.event.is_set() else ec.REBALANCE_IN_PROGRESS
                if error:
                    return R(error_code=error, assignment=b"")
        return R(
            error_code=ec.NONE,
            protocol_type=g.protocol_type,
            protocol_name=g.protocol_name,
            assignment=mb.assignment,
        )

    def heartbeat(self, req: m.HeartbeatRequest) -> int:
        if code := self.coordinator_error(req.group_id):
            return code
        g = self.groups.get(req.group_id)
        mb = g.members.get(req.member_id) if g else None
        if g is None or mb is None:
            return ec.UNKNOWN_MEMBER_ID
        if req.generation_id != g.generation:
            return ec.ILLEGAL_GENERATION
        mb.last_seen = self.clock.monotonic()
        return ec.REBALANCE_IN_PROGRESS if g.state == PREPARING else ec.NONE

    def leave(self, group_id: str, members: list[tuple[str, str | None]]) -> list[int]:
        if code := self.coordinator_error(group_id):
            return [code] * len(members)
        g = self.groups.get(group_id)
        codes: list[int] = []
        for member_id, instance in members:
            if g is None:
                codes.append(ec.UNKNOWN_MEMBER_ID)
                continue
            if instance is not None:
                known = g.static.get(instance)
                if known is None or (member_id and member_id != known):
                    codes.append(ec.UNKNOWN_MEMBER_ID if known is None else ec.FENCED_INSTANCE_ID)
                    continue
                member_id = known
            if member_id not in g.members:
                codes.append(ec.UNKNOWN_MEMBER_ID)
                continue
            self._remove(g, member_id, ec.UNKNOWN_MEMBER_ID, "it left the group")
            codes.append(ec.NONE)
        if g is not None and any(c == ec.NONE for c in codes):
            self._members_left(g, "a member left")
        return codes

    def _members_left(self, g: Group, why: str) -> None:
        """After members were removed: rebalance the rest, or the group becomes Empty."""
        if g.members:
            self._prepare_rebalance(g, why)
            g.joined.set()
        else:
            g.state, g.leader = EMPTY, None
            g.generation += 1
            self._persist_group(g)

    async def sweep(self) -> None:
        """Removes members whose session expired and pending ids never used; expires offsets
        of empty groups past offsets.retention.minutes."""
        last_retention = 0.0
        while True:
            await trio.sleep(0.1)
            now = self.clock.monotonic()
            for g in list(self.groups.values()):
                for mid, deadline in list(g.pending.items()):
                    if now > deadline:
                        del g.pending[mid]
                        g.joined.set()
                expired = [
                    mid
                    for mid, mb in g.members.items()
                    if mb.join is None and now - mb.last_seen > mb.session_timeout_ms / 1000
                ]
                for mid in expired:
                    self._remove(g, mid, ec.UNKNOWN_MEMBER_ID, "its session timed out")
                if expired:
                    self._members_left(g, "a member's session timed out")
            if now - last_retention > 60:
                last_retention = now
                self.expire_offsets(self.clock.wall_ms())

    def expire_offsets(self, now_ms: int) -> int:
        n = 0
        for g in self.groups.values():
            if g.members:
                continue
            old = [k for k, e in g.offsets.items() if now_ms - e.commit_timestamp > self.retention_ms]
            for topic, partition in old:
                del g.offsets[(topic, partition)]
            self.store.append_nowait(
                g.group_id, [(self.store.offset_key(g.group_id, t, p), None) for t, p in old]
            )
            n += len(old)
        return n

    # ---- offsets ----

    def commit_check(self, req: m.OffsetCommitRequest, version: int) -> int:
        g = self.groups.get(req.group_id)
        generation = req.generation_id_or_member_epoch if version >= 1 else -1
        if not req.group_id:
            return ec.INVALID_GROUP_ID
        if code := self.coordinator_error(req.group_id):
            return code
        if g is None or not g.members:
            if generation >= 0 and req.member_id:
                return ec.UNKNOWN_MEMBER_ID if g is None or generation != g.generation else ec.NONE
            return ec.NONE
        instance = req.group_instance_id if version >= 7 else None
        if instance is not None and g.static.get(instance) not in (None, req.member_id):
            return ec.FENCED_INSTANCE_ID
        if req.member_id not in g.members:
            return ec.UNKNOWN_MEMBER_ID
        if generation != g.generation:
            return ec.ILLEGAL_GENERATION
        if g.state == COMPLETING:
            # Commits stay allowed while preparing a rebalance (members commit before giving
            # partitions up), as in Kafka; between join and sync they are refused.
            return ec.REBALANCE_IN_PROGRESS
        g.members[req.member_id].last_seen = self.clock.monotonic()
        return ec.NONE

    async def commit(self, group_id: str, entries: list[tuple[str, int, OffsetEntry]]) -> None:
        """Writes the commits, then makes them visible to OffsetFetch; raises if the write failed."""
        await self.store.append(
            group_id,
            [(self.store.offset_key(group_id, t, p), self.store.offset_value(e)) for t, p, e in entries],
        )
        g = self._group(group_id)
        for topic, partition, entry in entries:
            g.offsets[(topic, partition)] = entry
        self.offset_commits += len(entries)

    def fetch(self, group_id: str) -> dict[tuple[str, int], OffsetEntry]:
        g = self.groups.get(group_id)
        return g.offsets if g else {}

    def delete_group(self, group_id: str) -> int:
        if code := self.coordinator_error(group_id):
            return code
        g = self.groups.get(group_id)
        if g is None:
            return ec.GROUP_ID_NOT_FOUND
        if g.members or g.state not in (EMPTY, DEAD):
            return ec.NON_EMPTY_GROUP
        records: list[tuple[bytes, bytes | None]] = [
            (self.store.offset_key(group_id, t, p), None) for t, p in g.offsets
        ]
        records.append((self.store.group_key(group_id), None))
        self.store.append_nowait(group_id, records)
        del self.groups[group_id]
        return ec.NONE

    def subscribed_topics(self, g: Group) -> set[str]:
        topics: set[str] = set()
        if g.protocol_type != "consumer":
            return topics
        for mb in g.members.values():
            data = mb.metadata_for(g.protocol_name)
            if len(data) >= 2:
                try:
                    version = int.from_bytes(data[:2], "big", signed=True)
                    sub = m.ConsumerProtocolSubscription.decode(data[2:], min(version, 3))
                    topics.update(sub.topics)
                except ValueError:
                    continue
        return topics
