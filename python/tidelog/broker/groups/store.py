"""Committed offsets and group metadata as records of the internal topic
``__consumer_offsets``, with Kafka's key and value schemas: loaded per partition when this
broker becomes its leader, appended on every change, and bounded by snapshotting a
partition's live entries and dropping what came before them."""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from tidelog.broker.controller import create_or_get
from tidelog.errors import TidelogError
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


class _Pending:
    """Records queued for one ``__consumer_offsets`` partition, and who waits for them."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self.done = trio.Event()
        self.error: TidelogError | None = None


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
    ) -> None:
        self.controller = controller
        self.replicas = replicas
        self.partitions = partitions
        self.segment_bytes = segment_bytes
        self.compact_bytes = compact_bytes
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
        (and flushed, if the flush policy says so); raises what the append raised."""
        pending = self.append_nowait(group, records)
        if pending is not None:
            await pending.done.wait()
            if pending.error is not None:
                raise pending.error

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
