"""A consumer-group member over a blocking ``Connection``: join and sync (with the range
assignor when it leads), heartbeats, committed offsets, leaving. Used by ``tidelog consume
--group``; the coordinator is the connected broker (single-node)."""

from __future__ import annotations

from tidelog.client.connection import BrokerError, Connection
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.primitives import INT16

PROTOCOL = "range"


def subscription(topics: list[str]) -> bytes:
    body = m.ConsumerProtocolSubscription(topics=topics, user_data=None).encode(0)
    return INT16.pack(0) + bytes(body.buf)


def assignment(parts: dict[str, list[int]]) -> bytes:
    A = m.ConsumerProtocolAssignment
    body = A(
        assigned_partitions=[A.TopicPartition(topic=t, partitions=p) for t, p in sorted(parts.items())],
        user_data=None,
    ).encode(0)
    return INT16.pack(0) + bytes(body.buf)


def range_assign(
    members: dict[str, list[str]], partitions: dict[str, int]
) -> dict[str, dict[str, list[int]]]:
    """Kafka's RangeAssignor: per topic, consecutive partition ranges to members sorted by id."""
    out: dict[str, dict[str, list[int]]] = {mid: {} for mid in members}
    for topic, count in sorted(partitions.items()):
        subscribers = sorted(mid for mid, topics in members.items() if topic in topics)
        if not subscribers:
            continue
        per, extra = divmod(count, len(subscribers))
        start = 0
        for i, mid in enumerate(subscribers):
            n = per + (1 if i < extra else 0)
            out[mid][topic] = list(range(start, start + n))
            start += n
    return out


def commit_offsets(
    conn: Connection,
    group: str,
    topic: str,
    positions: dict[int, int],
    generation: int = -1,
    member_id: str = "",
) -> None:
    """Commits {partition: next offset} for ``group``; generation -1 with no member id is the
    commit of a client outside the group (accepted only while the group has no members)."""
    if not positions:
        return
    OC = m.OffsetCommitRequest
    P = OC.OffsetCommitRequestTopic.OffsetCommitRequestPartition
    parts = [
        P(partition_index=p, committed_offset=o, committed_metadata=None)
        for p, o in sorted(positions.items())
    ]
    resp = conn.send(
        OC(
            group_id=group,
            generation_id_or_member_epoch=generation,
            member_id=member_id,
            topics=[OC.OffsetCommitRequestTopic(name=topic, partitions=parts)],
        )
    )
    for t in resp.topics:
        for p in t.partitions:
            if p.error_code:
                raise BrokerError(
                    f"commit to {topic}-{p.partition_index}: error {p.error_code}", p.error_code
                )


class GroupMember:
    def __init__(
        self, conn: Connection, group: str, topic: str, partitions: int, session_timeout_ms: int = 10000
    ):
        self.conn, self.group, self.topic, self.partitions = conn, group, topic, partitions
        self.session_timeout_ms = session_timeout_ms
        self.member_id = ""
        self.generation = -1

    def join(self) -> list[int]:
        """Joins (or rejoins) the group; returns the partitions of the topic assigned to us."""
        J = m.JoinGroupRequest
        while True:
            resp = self.conn.send(
                J(
                    group_id=self.group,
                    session_timeout_ms=self.session_timeout_ms,
                    rebalance_timeout_ms=30000,
                    member_id=self.member_id,
                    protocol_type="consumer",
                    protocols=[
                        J.JoinGroupRequestProtocol(name=PROTOCOL, metadata=subscription([self.topic]))
                    ],
                )
            )
            self.member_id = resp.member_id
            if resp.error_code == ec.MEMBER_ID_REQUIRED:
                continue
            if resp.error_code:
                raise BrokerError(f"joining group {self.group}: error {resp.error_code}", resp.error_code)
            break
        self.generation = resp.generation_id
        S = m.SyncGroupRequest
        assignments = []
        if resp.leader == self.member_id:
            members: dict[str, list[str]] = {}
            for mb in resp.members:
                sub = m.ConsumerProtocolSubscription.decode(bytes(mb.metadata)[2:], 0)
                members[mb.member_id] = list(sub.topics)
            plan = range_assign(members, {self.topic: self.partitions})
            assignments = [
                S.SyncGroupRequestAssignment(member_id=mid, assignment=assignment(parts))
                for mid, parts in plan.items()
            ]
        sync = self.conn.send(
            S(
                group_id=self.group,
                generation_id=self.generation,
                member_id=self.member_id,
                protocol_type="consumer",
                protocol_name=PROTOCOL,
                assignments=assignments,
            )
        )
        if sync.error_code:
            raise BrokerError(f"syncing group {self.group}: error {sync.error_code}", sync.error_code)
        data = bytes(sync.assignment)
        if len(data) < 2:
            return []
        mine = m.ConsumerProtocolAssignment.decode(data[2:], 0)
        return sorted(p for tp in mine.assigned_partitions if tp.topic == self.topic for p in tp.partitions)

    def heartbeat(self) -> int:
        return int(
            self.conn.send(
                m.HeartbeatRequest(
                    group_id=self.group, generation_id=self.generation, member_id=self.member_id
                )
            ).error_code
        )

    def committed(self, partitions: list[int]) -> dict[int, int]:
        """Committed next offsets (-1 where none)."""
        resp = self.conn.send(
            m.OffsetFetchRequest(
                group_id=self.group,
                topics=[
                    m.OffsetFetchRequest.OffsetFetchRequestTopic(
                        name=self.topic, partition_indexes=partitions
                    )
                ],
            )
        )
        return {p.partition_index: p.committed_offset for t in resp.topics for p in t.partitions}

    def commit(self, positions: dict[int, int]) -> None:
        commit_offsets(self.conn, self.group, self.topic, positions, self.generation, self.member_id)

    def leave(self) -> None:
        L = m.LeaveGroupRequest
        self.conn.send(L(group_id=self.group, members=[L.MemberIdentity(member_id=self.member_id)]))
