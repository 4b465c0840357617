"""One partition on this broker: its log, high watermark, leader epoch, idempotent-producer
state (with its snapshots), flush policy, and the event that wakes long-polling fetches."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import trio

from tidelog.broker.clock import Clock
from tidelog.broker.producer_state import ProducerStateManager
from tidelog.buffers import as_view
from tidelog.errors import CorruptRecordError, LogClosedError, UnknownTopicOrPartitionError
from tidelog.records import BatchHeader, iter_batches
from tidelog.storage import Log

T = TypeVar("T")
logger = logging.getLogger("tidelog.broker")


class OutOfOrder(Exception):
    """An idempotent batch whose sequence number does not follow its producer's last one."""

    def __init__(self, code: int) -> None:
        super().__init__(f"error {code}")
        self.code = code


class OfflinePartition:
    """A partition whose log could not be opened at start (a failed or damaged disk): it has
    no leader, clients asking for it are told KAFKA_STORAGE_ERROR, and every other partition
    is served. It comes back when the cause is fixed and the broker restarted."""

    def __init__(self, topic: str, index: int, path: str, reason: str) -> None:
        self.topic = topic
        self.index = index
        self.path = path
        self.reason = reason
        self.leader_epoch = 0


class Partition:
    """A partition led by this broker. With one replica the high watermark is the log end
    offset; the cluster work will make it the ISR minimum."""

    def __init__(
        self,
        topic: str,
        index: int,
        log: Log,
        flush_messages: int | None,
        flush_ms: int | None,
        producer_id_expiration_ms: int,
        clock: Clock,
    ) -> None:
        self.topic = topic
        self.clock = clock
        self.index = index
        self.log = log
        self.leader_epoch = 0
        self.producer_state = ProducerStateManager(log.path, producer_id_expiration_ms)
        self.flush_messages = flush_messages
        self.flush_ms = flush_ms
        self.unflushed = 0
        self.last_flush = clock.monotonic()
        self._appended = trio.Event()
        self._append_lock = trio.Lock()
        self.retired = False  # its topic is being deleted: no more appends
        self._load_producer_state()
        # What was on disk when the log was opened has not been CRC-checked since (a clean
        # shutdown skips recovery's scan, and a bit can rot after one): fetches of
        # [verified_to, opened_end) go through read_raw, which checks every batch and never
        # returns a damaged one; everything else, checked when appended, is sent zero-copy.
        self.opened_end = log.end_offset
        self.verified_to = log.start_offset

    @property
    def high_watermark(self) -> int:
        return self.log.end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.start_offset

    async def append_as_leader(self, records: Any) -> tuple[int, int, int]:
        """A produce request's batches, appended by the partition's leader: (base offset, log
        append time, records appended). Idempotent batches are sequence-checked (a retried
        duplicate is acknowledged with its original offset and not appended again; a gap
        raises OutOfOrder), the producers' state is updated, then the flush policy applies."""
        result = await self._locked_append(self._leader_append, records, len(records) if records else 0)
        if result[2] and self.appended(result[2]):
            await self.flush()
        return result

    async def append_own(self, records: list[tuple[bytes, bytes | None]], size: int) -> None:
        """Records the broker itself writes (``__consumer_offsets``): the same lock, roll
        handling and flush policy as produced records. ``size``: about how many bytes."""
        await self._locked_append(lambda recs: self.log.append(recs), records, size)
        if self.appended(len(records)):
            await self.flush()

    async def _locked_append(self, append: Callable[[Any], T], records: Any, size: int) -> T:
        """Runs ``append(records)`` one at a time per partition. When the append will roll the
        segment, which fsyncs the old one, it runs in a worker thread so the event loop never
        waits for the disk. After a roll the producer state is snapshotted (at the log end
        offset), also off the loop."""
        async with self._append_lock:
            self._check_live()
            active = self._active_segment()
            if self.log.active_segment_bytes + size > self.log.config.segment_bytes:
                result = await trio.to_thread.run_sync(append, records)
            else:
                result = append(records)
            if self._active_segment() != active:
                offset, contents = self.log.end_offset, self.producer_state.snapshot()
                await trio.to_thread.run_sync(self.producer_state.write_snapshot, offset, contents)
            return result

    def _leader_append(self, records: Any) -> tuple[int, int, int]:
        if records is None or len(records) == 0:
            raise CorruptRecordError("produce request without records", reason="no records")
        headers = [h for h, _ in iter_batches(as_view(records))]
        for h in headers:
            if h.producer_id >= 0:
                verdict, value = self.producer_state.check_sequence(h)
                if verdict == "duplicate":
                    return value, -1, 0
                if verdict == "error":
                    raise OutOfOrder(value)
        res = self.log.append_batches(records)
        offset = res.first_offset
        now = self.clock.wall_ms()
        for h in headers:
            if h.producer_id >= 0:
                self.producer_state.record_batch(h, offset, now)
            offset += h.last_offset_delta + 1
        return res.first_offset, res.log_append_time, res.record_count

    async def run_exclusive(self, fn: Callable[[Log], T]) -> T | None:
        """Runs ``fn(log)`` in a worker thread with no append running, unless the partition was
        retired (then None): for work such as retention that must not race a delete."""
        async with self._append_lock:
            if self.retired:
                return None
            return await trio.to_thread.run_sync(fn, self.log)

    async def retire(self) -> None:
        """Waits for the append in progress, then refuses every later one: the topic is being
        deleted, and nothing may be acknowledged into a log about to be removed."""
        async with self._append_lock:
            self.retired = True

    def _check_live(self) -> None:
        if self.retired:
            raise UnknownTopicOrPartitionError(
                f"partition {self.topic}-{self.index} was deleted", topic=self.topic, partition=self.index
            )

    def _active_segment(self) -> int:
        """The active segment's base offset (an index lookup: no list of every segment)."""
        return self.log.index_lookup(self.log.end_offset).segment

    def unverified(self, offset: int) -> bool:
        """Whether a fetch at ``offset`` must be CRC-checked before it is sent."""
        return self.verified_to <= offset < self.opened_end

    def verified(self, offset: int, next_offset: int) -> None:
        """Batches from ``offset`` up to ``next_offset`` were read whole and checked."""
        if offset <= self.verified_to < next_offset:
            self.verified_to = next_offset

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
            self.flush_ms is not None and (self.clock.monotonic() - self.last_flush) * 1000 >= self.flush_ms
        )

    async def flush(self) -> None:
        """fsync in a worker thread: never on the event loop."""
        self.unflushed = 0
        self.last_flush = self.clock.monotonic()
        try:
            await trio.to_thread.run_sync(self.log.flush)
        except LogClosedError:
            if not self.retired:
                raise

    def close(self) -> None:
        """Snapshots the producer state and closes the log cleanly (blocking I/O)."""
        if not self.log.closed:
            self.producer_state.write_snapshot(self.log.end_offset, self.producer_state.snapshot())
        self.log.close()

    # ---- idempotent producers' state ----

    def _load_producer_state(self) -> None:
        """The newest snapshot, then the batch headers after it (blocking I/O)."""
        now = self.clock.wall_ms()
        start = self.producer_state.load_snapshot(self.log.end_offset, now)
        self.producer_state.replay(self._headers_from(max(self.log.start_offset, start or 0)), now)

    def _headers_from(self, pos: int) -> Iterator[BatchHeader]:
        while pos < self.log.end_offset:
            try:
                raw = self.log.read_raw(pos, 8 << 20)
            except CorruptRecordError as e:
                pos = self._step_over_damage(pos, e)
                continue
            last = None
            for h, _ in iter_batches(raw):
                yield h
                last = h
            if last is None:
                break
            pos = last.next_offset

    def _step_over_damage(self, pos: int, e: CorruptRecordError) -> int:
        """A damaged batch found after a clean stop (recovery did not rescan it). In the active
        segment the log is cut there, as recovery after an unclean stop would; in an older
        segment it is left for reads to report, and the replay resumes at the next segment.
        Either way the partition stays online and the broker starts."""
        name = f"{self.topic}-{self.index}"
        if pos >= self.log.segments[-1]:
            end = self.log.end_offset
            logger.warning(
                "partition %s: damaged batch at offset %d (%s): log cut from %d to %d", name, pos, e, end, pos
            )
            self.log.truncate_to(pos)
            return self.log.end_offset
        later = [b for b in self.log.segments if b > pos]
        logger.warning(
            "partition %s: damaged batch at offset %d (%s) left in place; producer state replay "
            "resumes at offset %d",
            name,
            pos,
            e,
            later[0],
        )
        return later[0]
