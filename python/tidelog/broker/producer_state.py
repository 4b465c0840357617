"""Idempotent producers' state for one partition, and its snapshot files.

For each producer id the partition remembers its epoch and its last few batches (sequence
range and offsets), so that a retried batch is acknowledged with its original offset instead of
being appended twice, and a gap in sequences is refused. The state is rebuilt at start-up the
way Kafka's ProducerStateManager does it: load the newest snapshot ``<offset>.snapshot``
(Kafka's file format, version 1) and replay the batch headers of the log from that offset.
Snapshots are written when a segment rolls and at a clean shutdown, so the state survives
restarts and retention deleting the segments that held a producer's batches.

Snapshot file (big-endian): version int16 = 1, crc uint32 (CRC-32C of everything after it),
entry count int32, then per producer: producer_id int64, epoch int16, last_sequence int32,
last_offset int64, offset_delta int32, timestamp int64, coordinator_epoch int32,
current_txn_first_offset int64. Only a producer's last batch is stored (as in Kafka).

Producers idle for ``producer.id.expiration.ms`` (by their last batch's max timestamp, as
Kafka) are forgotten.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
from collections import deque
from collections.abc import Iterable

from tidelog._crc32c import crc32c
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.records import BatchHeader
from tidelog.storage.fileio import write_file_atomic

log = logging.getLogger("tidelog.broker")

#: Batches remembered per producer for duplicate detection (Kafka keeps 5).
PRODUCER_BATCHES = 5
SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 1
#: Snapshots kept: the newest, and one before it in case the newest is damaged.
SNAPSHOTS_KEPT = 2
_HEAD = struct.Struct(">hIi")
_ENTRY = struct.Struct(">qhiqiqiq")


class CorruptSnapshotError(ValueError):
    """A snapshot file that cannot be used (bad version, CRC or length)."""


@dataclasses.dataclass
class ProducerEntry:
    epoch: int
    #: (first sequence, last sequence, first offset, last offset) of recent batches.
    batches: deque[tuple[int, int, int, int]]
    #: The max timestamp of its last batch, for expiration.
    last_timestamp: int = -1

    @property
    def last_sequence(self) -> int:
        return self.batches[-1][1] if self.batches else -1


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def list_snapshots(directory: str) -> list[int]:
    """Offsets of the snapshot files in ``directory``, oldest first."""
    out = []
    for name in os.listdir(directory):
        stem, _, ext = name.partition(".")
        if ext == SNAPSHOT_SUFFIX[1:] and len(stem) == 20 and stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def encode_snapshot(producers: dict[int, ProducerEntry]) -> bytes:
    body = bytearray(struct.pack(">i", len(producers)))
    for pid, e in sorted(producers.items()):
        first_seq, last_seq, _, last_offset = e.batches[-1]
        delta = (last_seq - first_seq) & 0x7FFFFFFF
        body += _ENTRY.pack(pid, e.epoch, last_seq, last_offset, delta, e.last_timestamp, -1, -1)
    return struct.pack(">hI", SNAPSHOT_VERSION, crc32c(body)) + body


def decode_snapshot(data: bytes) -> dict[int, ProducerEntry]:
    if len(data) < _HEAD.size:
        raise CorruptSnapshotError(f"{len(data)} bytes is shorter than a snapshot header")
    version, crc, count = _HEAD.unpack_from(data)
    if version != SNAPSHOT_VERSION:
        raise CorruptSnapshotError(f"snapshot version {version} is not {SNAPSHOT_VERSION}")
    if crc32c(memoryview(data)[6:]) != crc:
        raise CorruptSnapshotError("snapshot CRC-32C mismatch")
    if count < 0 or len(data) != _HEAD.size + count * _ENTRY.size:
        raise CorruptSnapshotError(f"snapshot length {len(data)} does not hold {count} entries")
    out = {}
    for i in range(count):
        pid, epoch, last_seq, last_offset, delta, ts, _, _ = _ENTRY.unpack_from(
            data, _HEAD.size + i * _ENTRY.size
        )
        first_seq = (last_seq - delta) & 0x7FFFFFFF
        batch = (first_seq, last_seq, last_offset - delta, last_offset)
        out[pid] = ProducerEntry(epoch, deque([batch], maxlen=PRODUCER_BATCHES), ts)
    return out


class ProducerStateManager:
    """The producers of one partition (see the module notes)."""

    def __init__(self, directory: str, expiration_ms: int) -> None:
        self.directory = directory
        self.expiration_ms = expiration_ms
        self.producers: dict[int, ProducerEntry] = {}

    def check_sequence(self, h: BatchHeader) -> tuple[str, int]:
        """("append", 0), ("duplicate", first offset of the original) or ("error", code)."""
        entry = self.producers.get(h.producer_id)
        last_seq = h.base_sequence + h.last_offset_delta
        if entry is None:
            return ("append", 0) if h.base_sequence == 0 else ("error", ec.OUT_OF_ORDER_SEQUENCE_NUMBER)
        if h.producer_epoch < entry.epoch:
            return ("error", ec.INVALID_PRODUCER_EPOCH)
        if h.producer_epoch > entry.epoch:
            return ("append", 0) if h.base_sequence == 0 else ("error", ec.OUT_OF_ORDER_SEQUENCE_NUMBER)
        for first, last, first_offset, _ in entry.batches:
            if first == h.base_sequence and last == last_seq:
                return ("duplicate", first_offset)
        expected = (entry.last_sequence + 1) & 0x7FFFFFFF
        if h.base_sequence != expected:
            return ("error", ec.OUT_OF_ORDER_SEQUENCE_NUMBER)
        return ("append", 0)

    def record_batch(self, h: BatchHeader, first_offset: int, now_ms: int) -> None:
        """Remembers an appended batch (replayed ones too: a batch already known is skipped)."""
        entry = self.producers.get(h.producer_id)
        if entry is None or h.producer_epoch != entry.epoch:
            entry = self.producers[h.producer_id] = ProducerEntry(
                h.producer_epoch, deque(maxlen=PRODUCER_BATCHES)
            )
        last_offset = first_offset + h.last_offset_delta
        if entry.batches and entry.batches[-1][3] >= last_offset:
            return
        entry.batches.append(
            (h.base_sequence, h.base_sequence + h.last_offset_delta, first_offset, last_offset)
        )
        entry.last_timestamp = h.max_timestamp if h.max_timestamp >= 0 else now_ms

    def remove_expired(self, now_ms: int) -> None:
        expired = [
            pid for pid, e in self.producers.items() if now_ms - e.last_timestamp >= self.expiration_ms
        ]
        for pid in expired:
            del self.producers[pid]

    # ---- files (blocking I/O: call from a worker thread in the broker) ----

    def load_snapshot(self, log_end_offset: int, now_ms: int) -> int | None:
        """Loads the newest usable snapshot at or below the log end offset; returns its offset.
        Snapshots past the log end (the log was cut since) and damaged ones are deleted."""
        for offset in reversed(list_snapshots(self.directory)):
            path = os.path.join(self.directory, snapshot_name(offset))
            if offset > log_end_offset:
                os.remove(path)
                continue
            try:
                with open(path, "rb") as f:
                    self.producers = decode_snapshot(f.read())
            except CorruptSnapshotError as e:
                log.warning("ignoring producer snapshot %s: %s", path, e)
                os.remove(path)
                continue
            self.remove_expired(now_ms)
            return offset
        self.producers = {}
        return None

    def replay(self, batches: Iterable[BatchHeader], now_ms: int) -> None:
        """Rebuilds from batch headers read from the log after the snapshot's offset."""
        for h in batches:
            if h.producer_id >= 0:
                self.record_batch(h, h.base_offset, now_ms)

    def snapshot(self) -> bytes:
        """The current state as a snapshot file's contents (cheap: taken on the event loop)."""
        return encode_snapshot(self.producers)

    def write_snapshot(self, offset: int, contents: bytes) -> None:
        """Writes ``<offset>.snapshot`` durably and deletes all but the newest few. A snapshot
        only shortens the replay at the next start, so failing to write one (a full disk) is
        logged and otherwise ignored: the older snapshot and the log still hold the state."""
        try:
            write_file_atomic(self.directory, snapshot_name(offset), contents)
            for old in list_snapshots(self.directory)[:-SNAPSHOTS_KEPT]:
                os.remove(os.path.join(self.directory, snapshot_name(old)))
        except (TidelogError, OSError) as e:
            log.warning(
                "producer-state snapshot at offset %d in %s not written: %s", offset, self.directory, e
            )
