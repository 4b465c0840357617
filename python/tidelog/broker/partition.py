"""One partition on this broker: its log, high watermark, leader epoch, idempotent-producer
state, flush policy, and the event that wakes long-polling fetches."""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from tidelog.records import BatchHeader
from tidelog.storage import Log

T = TypeVar("T")
#: Batches remembered per producer for duplicate detection (Kafka keeps 5).
PRODUCER_BATCHES = 5


@dataclasses.dataclass
class ProducerEntry:
    epoch: int
    #: (first sequence, last sequence, first offset, last offset) of recent batches.
    batches: deque[tuple[int, int, int, int]]

    @property
    def last_sequence(self) -> int:
        return self.batches[-1][1] if self.batches else -1


class Partition:
    """A partition led by this broker. With one replica the high watermark is the log end
    offset; the cluster work will make it the ISR minimum."""

    def __init__(
        self, topic: str, index: int, log: Log, flush_messages: int | None, flush_ms: int | None
    ) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.leader_epoch = 0
        self.producers: dict[int, ProducerEntry] = {}
        self.flush_messages = flush_messages
        self.flush_ms = flush_ms
        self.unflushed = 0
        self.last_flush = time.monotonic()
        self._appended = trio.Event()
        self._append_lock = trio.Lock()
        self._rebuild_producer_state()

    @property
    def high_watermark(self) -> int:
        return self.log.end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.start_offset

    async def append_records(self, append: Callable[[Partition, Any], T], records: Any) -> T:
        """Runs ``append(self, records)`` (sequence checks + the log append) one at a time per
        partition. When the append will roll the segment, which fsyncs the old one, it runs in a
        worker thread so the event loop never waits for the disk."""
        async with self._append_lock:
            size = len(records) if records is not None else 0
            if self.log.active_segment_bytes + size > self.log.config.segment_bytes:
                return await trio.to_thread.run_sync(append, self, records)
            return append(self, records)

    def wait_for_data(self) -> trio.Event:
        """An event set by the next append."""
        return self._appended

    def appended(self, records: int) -> bool:
        """Wakes fetchers; returns True if the flush policy says to fsync now."""
        self._appended.set()
        self._appended = trio.Event()
        self.unflushed += records
        due = self.flush_messages is not None and self.unflushed >= self.flush_messages
        return due or (
            self.flush_ms is not None and (time.monotonic() - self.last_flush) * 1000 >= self.flush_ms
        )

    async def flush(self) -> None:
        """fsync in a worker thread: never on the event loop."""
        self.unflushed = 0
        self.last_flush = time.monotonic()
        await trio.to_thread.run_sync(self.log.flush)

    # ---- idempotent producers ----

    def check_sequence(self, h: BatchHeader) -> tuple[str, int]:
        """("append", 0), ("duplicate", first offset of the original) or ("error", code)."""
        from tidelog.protocol import error_codes as ec

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

    def record_batch(self, h: BatchHeader, first_offset: int) -> None:
        entry = self.producers.get(h.producer_id)
        if entry is None or h.producer_epoch != entry.epoch:
            entry = self.producers[h.producer_id] = ProducerEntry(
                h.producer_epoch, deque(maxlen=PRODUCER_BATCHES)
            )
        entry.batches.append(
            (
                h.base_sequence,
                h.base_sequence + h.last_offset_delta,
                first_offset,
                first_offset + h.last_offset_delta,
            )
        )

    def _rebuild_producer_state(self) -> None:
        """Replays the batch headers of the active segment (where live producers' recent
        batches are) so retried batches are still recognised after a restart."""
        from tidelog.records import iter_batches

        pos = max(self.log.start_offset, self.log.segments[-1])
        while pos < self.log.end_offset:
            raw = self.log.read_raw(pos, 8 << 20)
            last = None
            for h, _ in iter_batches(raw):
                if h.producer_id >= 0:
                    self.record_batch(h, h.base_offset)
                last = h
            if last is None:
                break
            pos = last.next_offset
