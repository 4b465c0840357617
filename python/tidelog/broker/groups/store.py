"""Committed offsets and group metadata as records of the internal topic
``__consumer_offsets``, with Kafka's key and value schemas: loaded per partition when this
broker becomes its leader, appended on every change, and bounded by snapshotting a
partition's live entries and dropping what came before them.

In a cluster the topic is replicated (``offsets.topic.replication.factor``, at most the
brokers live when it is made) and an offset commit is answered once every in-sync replica
has it (``offsets.commit.timeout.ms``), so a coordinator's failover loses no acknowledged
commit. Its errors are Kafka's: COORDINATOR_NOT_AVAILABLE when too few replicas took it in
time, NOT_COORDINATOR when the leadership moved meanwhile."""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from tidelog.broker.controller import create_or_get
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import NotReplicatedError, TidelogError
from tidelog.protocol import _messages as m
from tidelog.protocol.primitives import INT16, Reader

if TYPE_CHECKING:
    from tidelog.broker.controller import Controller
    from tidelog.broker.partition import Partition
    from tidelog.broker.replicas import ReplicaManager

log = logging.getLogger("tidelog.broker.groups")
TOPIC = "__consumer_offsets"
OFFSET_KEY_VERSION = 1
GROUP_KEY_VERSION = 2
OFFSET_VALUE_VERSION = 3
GROUP_VALUE_VERSION = 3


@dataclasses.dataclass
class OffsetEntry:
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp: int


def java_hash(s: str) -> int:
    """Java's String.hashCode (over UTF-16 code units), as a signed int32."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


#: What an offset commit answers for a write its replicas did not all take (Kafka's
#: GroupMetadataManager): retriable codes that send the client back to FindCoordinator.
COMMIT_ERRORS: dict[int, int] = {
    ec.NOT_ENOUGH_REPLICAS: ec.COORDINATOR_NOT_AVAILABLE,
    ec.NOT_ENOUGH_REPLICAS_AFTER_APPEND: ec.COORDINATOR_NOT_AVAILABLE,
    ec.REQUEST_TIMED_OUT: ec.COORDINATOR_NOT_AVAILABLE,
    ec.NOT_LEADER_OR_FOLLOWER: ec.NOT_COORDINATOR,
}


class _Pending:
    """Records queued for one ``__consumer_offsets`` partition, and who waits for them."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.done = trio.Event()
        self.error: TidelogError | None = None
        self.end_offset = 0  # the log end offset once they were appended


class OffsetsStore:
    """Writes go through one queue per partition, drained in order by a writer task: the
    append (in a worker thread when it rolls a segment), the partition's flush policy, and
    compaction (in a worker thread, with no other append running) all stay off the event loop."""

    def __init__(
        self,
        controller: Controller,
        replicas: ReplicaManager,
        partitions: int,
        segment_bytes: int,
        compact_bytes: int,
        nursery_holder: Callable[[], trio.Nursery | None],
        replication_factor: int = 1,
        commit_timeout_s: float = 5.0,
    ) -> None:
        self.controller = controller
        self.replicas = replicas
        self.partitions = partitions
        self.segment_bytes = segment_bytes
        self.compact_bytes = compact_bytes
        self.replication_factor = replication_factor
        self.commit_timeout_s = commit_timeout_s
        self._creating: trio.Event | None = None
        self._nursery_holder = nursery_holder
        self._queues: dict[int, _Pending] = {}  # partition -> records not yet taken by its writer

    def partition_of(self, group: str) -> int:
        """Where a group's records go: abs(hashCode(group)) % partitions, as Kafka."""
        return (java_hash(group) & 0x7FFFFFFF) % self.partitions

    async def ensure_topic(self) -> None:
        """Creates __consumer_offsets on first use (as Kafka does on FindCoordinator), its logs
        opened in a worker thread; concurrent callers wait for that one creation."""
        if self.replicas.image.topic(TOPIC) is not None:
            return
        if self._creating is not None:
            await self._creating.wait()
            return
        self._creating = trio.Event()
        try:
            await create_or_get(
                self.controller,
                lambda: self.replicas.image,
                TOPIC,
                self.partitions,
                self._configs(),
                internal=True,
                replication_factor=max(1, min(self.replication_factor, len(self.replicas.image.brokers))),
            )
        finally:
            self._creating.set()
            self._creating = None

    def _configs(self) -> dict[str, str]:
        return {"segment.bytes": str(self.segment_bytes), "retention.ms": "-1"}

    def _partition(self, group: str) -> Partition:
        part = self.replicas.partition(TOPIC, self.partition_of(group))
        # Every path that writes a group's records first came through ensure_topic (or loaded
        # the group from this very topic).
        assert part is not None, "ensure_topic() must run before a group's records are written"
        return part

    # ---- encoding ----

    @staticmethod
    def offset_key(group: str, topic: str, partition: int) -> bytes:
        body = m.OffsetCommitKey(group=group, topic=topic, partition=partition).encode(OFFSET_KEY_VERSION)
        return INT16.pack(OFFSET_KEY_VERSION) + bytes(body.buf)

    @staticmethod
    def group_key(group: str) -> bytes:
        return INT16.pack(GROUP_KEY_VERSION) + bytes(
            m.GroupMetadataKey(group=group).encode(GROUP_KEY_VERSION).buf
        )

    @staticmethod
    def offset_value(e: OffsetEntry) -> bytes:
        v = m.OffsetCommitValue(
            offset=e.offset,
            leader_epoch=e.leader_epoch,
            metadata=e.metadata or "",
            commit_timestamp=e.commit_timestamp,
        )
        return INT16.pack(OFFSET_VALUE_VERSION) + bytes(v.encode(OFFSET_VALUE_VERSION).buf)

    @staticmethod
    def group_value(value: Any) -> bytes:
        return INT16.pack(GROUP_VALUE_VERSION) + bytes(value.encode(GROUP_VALUE_VERSION).buf)

    # ---- writing ----

    async def append(self, group: str, records: list[tuple[bytes, bytes | None]]) -> None:
        """Queues ``records`` for the group's partition and waits until they are appended
        (and flushed, if the flush policy says so) and every in-sync replica has them; raises
        what the append raised, or NotReplicatedError with the code a commit answers."""
        pending = self.append_nowait(group, records)
        if pending is None:
            return
        part = self._partition(group)
        await pending.done.wait()
        if pending.error is None:
            code = await part.wait_for_high_watermark(
                pending.end_offset - 1, trio.current_time() + self.commit_timeout_s
            )
        elif pending.error.error_code in COMMIT_ERRORS:  # the leadership moved before the append
            code = pending.error.error_code
        else:
            raise pending.error
        if code != ec.NONE:
            raise NotReplicatedError(
                f"{TOPIC}-{part.index} up to offset {pending.end_offset}: {ec(code).name}",
                topic=TOPIC,
                partition=part.index,
                end_offset=pending.end_offset,
                error_code=COMMIT_ERRORS.get(code, code),
            )

    def append_nowait(self, group: str, records: list[tuple[bytes, bytes | None]]) -> _Pending | None:
        """Queues ``records`` behind those already queued for the group's partition."""
        if not records:
            return None
        p = self._partition(group).index
        pending = self._queues.get(p)
        if pending is None:
            pending = self._queues[p] = _Pending()
            nursery = self._nursery_holder()
            assert nursery is not None, "offsets are written only while the broker serves"
            nursery.start_soon(self._write, p)
        pending.records += records
        return pending

    async def _write(self, p: int) -> None:
        part = self.replicas.partition(TOPIC, p)
        assert part is not None
        while p in self._queues:
            pending = self._queues.pop(p)
            size = sum(len(k) + len(v or b"") + 32 for k, v in pending.records)
            try:
                await part.append_own(pending.records, size)
                pending.end_offset = part.log.end_offset
                if part.log.size_bytes > self.compact_bytes:
                    await part.run_exclusive(lambda _log: self.compact(part))
            except TidelogError as e:
                log.error("could not write %d record(s) to %s-%d: %s", len(pending.records), TOPIC, p, e)
                pending.error = e
            pending.done.set()

    def compact(self, part: Partition) -> None:
        """Rewrites the partition's live entries at its end and drops everything before them
        (blocking I/O; no other append may run meanwhile)."""
        offsets, groups = self.read_partition(part)
        live: list[tuple[bytes, bytes | None]] = []
        for (group, topic, p), entry in offsets.items():
            live.append((self.offset_key(group, topic, p), self.offset_value(entry)))
        for group, value in groups.items():
            live.append((self.group_key(group), self.group_value(value)))
        start = part.log.end_offset
        for i in range(0, len(live), 500):
            part.log.append(live[i : i + 500])
        part.log.roll()
        part.log.delete_records_before(start)
        log.info("compacted %s-%d: %d live entries kept from offset %d", TOPIC, part.index, len(live), start)

    # ---- loading ----

    def read_partition(
        self, part: Partition
    ) -> tuple[dict[tuple[str, str, int], OffsetEntry], dict[str, Any]]:
        """The live offsets and groups in one partition (blocking I/O)."""
        offsets: dict[tuple[str, str, int], OffsetEntry] = {}
        groups: dict[str, Any] = {}
        for rec in part.log.records():
            if rec.key is None:
                continue
            try:
                self._apply(rec.key, rec.value, offsets, groups)
            except (struct.error, ValueError) as e:
                # Anything written there that is not ours (or damaged) must not stop the broker.
                log.warning(
                    "skipped an undecodable record at %s-%d offset %d: %s", TOPIC, part.index, rec.offset, e
                )
        return offsets, groups

    @staticmethod
    def _apply(
        key: bytes,
        value: bytes | None,
        offsets: dict[tuple[str, str, int], OffsetEntry],
        groups: dict[str, Any],
    ) -> None:
        """Applies one __consumer_offsets record (Kafka's key and value schemas) to the state."""
        (key_version,) = struct.unpack_from(">h", key)
        r = Reader(key, 2)
        if key_version in (0, 1):
            k = m.OffsetCommitKey.decode(r, key_version)
            ident = (k.group, k.topic, k.partition)
            if value is None:
                offsets.pop(ident, None)
            else:
                (vv,) = struct.unpack_from(">h", value)
                v = m.OffsetCommitValue.decode(Reader(value, 2), vv)
                offsets[ident] = OffsetEntry(v.offset, v.leader_epoch, v.metadata, v.commit_timestamp)
        elif key_version == GROUP_KEY_VERSION:
            gk = m.GroupMetadataKey.decode(r, key_version)
            if value is None:
                groups.pop(gk.group, None)
            else:
                (vv,) = struct.unpack_from(">h", value)
                groups[gk.group] = m.GroupMetadataValue.decode(Reader(value, 2), vv)
