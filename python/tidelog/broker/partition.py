"""One partition on this broker: its log, its replica role (leader or follower, leader epoch,
replicas and ISR), the high watermark, the followers' progress as its leader sees it,
idempotent-producer state (with its snapshots), the leader-epoch cache, the flush policy, and
the events that wake long-polling fetches and acks=all produces.

The high watermark is the smallest log end offset in the ISR (Kafka's rule): consumers are
served only below it, and an acks=all produce is answered once it passes the batch. While an
ISR change is waiting for etcd, the larger of the two sets counts (Kafka's "maximal ISR"), so
the high watermark never counts a replica out before the change is committed."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import trio

from tidelog.broker.checkpoints import LeaderEpochCache
from tidelog.broker.clock import Clock
from tidelog.broker.metadata import NO_LEADER, PartitionMetadata
from tidelog.broker.metrics import Histogram
from tidelog.broker.producer_state import ProducerStateManager
from tidelog.buffers import as_view
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import (
    CorruptRecordError,
    LogClosedError,
    NotLeaderOrFollowerError,
    UnknownTopicOrPartitionError,
)
from tidelog.records import BatchHeader, iter_batches
from tidelog.storage import Log

T = TypeVar("T")
#: Appends of at least this many bytes run in a worker thread on the pure-Python engine.
OFFLOAD_BYTES = 256 << 10
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


@dataclasses.dataclass
class FollowerState:
    """A follower as its leader sees it, from its fetches (times on the broker's clock)."""

    #: Its log end offset: the offset it last fetched from (-1 before its first fetch).
    log_end_offset: int = -1
    #: When it was last known to have everything the leader had.
    last_caught_up: float = 0.0
    #: The leader's log end offset and the time at its previous fetch.
    last_fetch_leader_end: int = -1
    last_fetch_time: float = 0.0


class Partition:
    """A partition hosted by this broker, as leader or follower (``set_state``). A lone
    replica is its own ISR, so its high watermark is its log end offset."""

    def __init__(
        self,
        topic: str,
        index: int,
        log: Log,
        flush_messages: int | None,
        flush_ms: int | None,
        producer_id_expiration_ms: int,
        clock: Clock,
        node_id: int = 0,
        high_watermark: int = 0,
    ) -> None:
        self.topic = topic
        self.clock = clock
        self.index = index
        self.log = log
        self.node_id = node_id
        self.leader_id = NO_LEADER
        self.leader_epoch = 0
        self.replicas: tuple[int, ...] = ()
        self.isr: tuple[int, ...] = ()  # as committed in the metadata
        #: How long each fsync of this log took (the LogFlushStats metric).
        self.flush_times = Histogram()
        self.pending_isr: tuple[int, ...] | None = None  # a change sent, not yet committed
        self.followers: dict[int, FollowerState] = {}
        self.min_insync_replicas = 1
        self._hw = min(high_watermark, log.end_offset)
        self._hw_moved = trio.Event()
        self.epochs = LeaderEpochCache(log.path)
        self.epochs.truncate_from_end(log.end_offset + 1)
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

    # ---- replica role ----

    @property
    def is_leader(self) -> bool:
        return self.leader_id == self.node_id

    @property
    def maximal_isr(self) -> frozenset[int]:
        return frozenset(self.isr) | frozenset(self.pending_isr or ())

    def set_state(self, meta: PartitionMetadata) -> bool:
        """Takes the role the metadata gives: leader (a new epoch starts at the log end
        offset; every follower counts as caught up now, as Kafka's makeLeader) or follower of
        ``meta.leader``. Returns whether the leader-epoch cache changed (then write it, off the
        event loop)."""
        now = self.clock.monotonic()
        new_term = (meta.leader, meta.leader_epoch) != (self.leader_id, self.leader_epoch)
        self.replicas, self.isr = meta.replicas, meta.isr
        if self.pending_isr is not None and (new_term or set(self.pending_isr) == set(meta.isr)):
            self.pending_isr = None
        changed = False
        if new_term:
            self.leader_id, self.leader_epoch = meta.leader, meta.leader_epoch
            self.followers = {}
            if self.is_leader:
                self.followers = {
                    r: FollowerState(last_caught_up=now) for r in meta.replicas if r != self.node_id
                }
                changed = self.epochs.assign(meta.leader_epoch, self.log.end_offset)
                logger.info(
                    "%s-%d: leader at epoch %d from offset %d, ISR %s",
                    self.topic,
                    self.index,
                    meta.leader_epoch,
                    self.log.end_offset,
                    list(meta.isr),
                )
        self._maybe_advance_hw()
        self._wake_waiters()  # acks=all waits see a lost leadership or a smaller ISR
        return changed

    @property
    def high_watermark(self) -> int:
        return min(self._hw, self.log.end_offset)

    def _maybe_advance_hw(self) -> None:
        """As leader: the high watermark becomes the smallest log end offset in the maximal
        ISR, if that is higher (it never goes back)."""
        if not self.is_leader:
            return
        end = self.log.end_offset
        for r in self.maximal_isr:
            if r != self.node_id:
                end = min(end, self.followers[r].log_end_offset if r in self.followers else -1)
        if end > self._hw:
            self._hw = end
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        self._hw_moved.set()
        self._hw_moved = trio.Event()

    def follower_fetched(self, replica: int, fetch_offset: int) -> bool:
        """The leader's record of a follower's fetch at ``fetch_offset`` (its log end offset),
        with Kafka's caught-up rule: caught up now if it has all the leader has, or at its
        previous fetch if it now has what the leader had then. Returns whether it should join
        the ISR (it is caught up to the high watermark and not in it)."""
        now = self.clock.monotonic()
        state = self.followers.get(replica)
        end = self.log.end_offset
        if state is None or fetch_offset > end:  # past the log end: a divergent tail, refused
            return False
        if fetch_offset >= end:
            state.last_caught_up = now
        elif fetch_offset >= state.last_fetch_leader_end:
            state.last_caught_up = max(state.last_caught_up, state.last_fetch_time)
        state.log_end_offset = fetch_offset
        state.last_fetch_leader_end, state.last_fetch_time = end, now
        self._maybe_advance_hw()
        return replica not in self.maximal_isr and fetch_offset >= self.high_watermark

    def lagging(self, max_lag_s: float) -> list[int]:
        """ISR members (not the leader) that have not caught up for longer than ``max_lag_s``."""
        now = self.clock.monotonic()
        return [
            r
            for r in self.isr
            if r != self.node_id
            and r in self.followers
            and now - self.followers[r].last_caught_up > max_lag_s
        ]

    def proposed_isr(self, max_lag_s: float) -> tuple[int, ...] | None:
        """As leader with no ISR change pending: the ISR it should have, if not the one it
        has. Out: members that have not caught up for ``max_lag_s``. In: followers caught up
        recently to the high watermark and to the start of this leader's epoch (Kafka's rule:
        a replica that has not reached the current epoch cannot be trusted with it)."""
        if not self.is_leader or self.pending_isr is not None or self.retired:
            return None
        now = self.clock.monotonic()
        lagging = set(self.lagging(max_lag_s))
        floor = max(self.high_watermark, self.epochs.entries[-1][1] if self.epochs.entries else 0)
        joining = {
            r
            for r, f in self.followers.items()
            if r not in self.isr and f.log_end_offset >= floor and now - f.last_caught_up <= max_lag_s
        }
        proposed = tuple(
            r
            for r in self.replicas
            if r == self.node_id or (r in self.isr and r not in lagging) or r in joining
        )
        return proposed if set(proposed) != set(self.isr) else None

    def follower_high_watermark(self, leader_hw: int) -> None:
        """As follower: the leader's high watermark, bounded by what this replica has."""
        if not self.is_leader:
            hw = min(leader_hw, self.log.end_offset)
            if hw > self._hw:
                self._hw = hw

    async def wait_for_high_watermark(self, offset: int, deadline: float) -> int:
        """Waits (up to ``deadline``, Trio's clock) until the high watermark passes ``offset``
        as an acks=all produce does; returns the error code its client gets: NONE,
        NOT_ENOUGH_REPLICAS_AFTER_APPEND (the ISR shrank below min.insync.replicas),
        NOT_LEADER_OR_FOLLOWER (leadership moved), or REQUEST_TIMED_OUT."""
        epoch = self.leader_epoch
        with trio.move_on_at(deadline):
            while True:
                if not self.is_leader or self.leader_epoch != epoch or self.retired:
                    return ec.NOT_LEADER_OR_FOLLOWER
                if self.high_watermark > offset:
                    if len(self.isr) < self.min_insync_replicas:
                        return ec.NOT_ENOUGH_REPLICAS_AFTER_APPEND
                    return ec.NONE
                await self._hw_moved.wait()
        return ec.REQUEST_TIMED_OUT

    def check_leader_epoch(self, current_leader_epoch: int) -> int:
        """A request's ``current_leader_epoch`` (-1: not given) against this replica's:
        FENCED_LEADER_EPOCH if older (the client's metadata is stale), UNKNOWN_LEADER_EPOCH if
        newer (this broker's is), else NONE."""
        if current_leader_epoch < 0 or current_leader_epoch == self.leader_epoch:
            return ec.NONE
        if current_leader_epoch < self.leader_epoch:
            return ec.FENCED_LEADER_EPOCH
        return ec.UNKNOWN_LEADER_EPOCH

    def check_insync(self) -> int:
        """Before an acks=all append: NOT_ENOUGH_REPLICAS if the ISR is smaller than
        ``min.insync.replicas``, else NONE."""
        return ec.NOT_ENOUGH_REPLICAS if len(self.isr) < self.min_insync_replicas else ec.NONE

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
        """Records the broker itself writes (``__consumer_offsets``) as its leader: the same
        lock, roll handling and flush policy as produced records. ``size``: about how many
        bytes. NotLeaderOrFollowerError once the leadership moved: a follower's log takes only
        its leader's batches."""
        if not self.is_leader:
            raise NotLeaderOrFollowerError(
                f"{self.topic}-{self.index} is led by broker {self.leader_id}, not this one",
                topic=self.topic,
                partition=self.index,
            )
        await self._locked_append(
            lambda recs: self.log.append(recs, leader_epoch=self.leader_epoch), records, size
        )
        if self.appended(len(records)):
            await self.flush()

    async def _locked_append(self, append: Callable[[Any], T], records: Any, size: int) -> T:
        """Runs ``append(records)`` one at a time per partition. When the append will roll the
        segment, which fsyncs the old one, or is large on the pure-Python engine
        (``OFFLOAD_BYTES``: validating it takes tens of milliseconds there, microseconds in
        Rust), it runs in a worker thread, so the event loop never waits for the disk and keeps
        answering (etcd keepalives among others) while a big batch is checked. After a roll
        the producer state is snapshotted (at the log end offset), also off the loop."""
        async with self._append_lock:
            self._check_live()
            active = self._active_segment()
            big = size >= OFFLOAD_BYTES and self.log.engine == "python"
            if big or self.log.active_segment_bytes + size > self.log.config.segment_bytes:
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
        res = self.log.append_batches(records, leader_epoch=self.leader_epoch)
        offset = res.first_offset
        now = self.clock.wall_ms()
        for h in headers:
            if h.producer_id >= 0:
                self.producer_state.record_batch(h, offset, now)
            offset += h.last_offset_delta + 1
        return res.first_offset, res.log_append_time, res.record_count

    async def append_as_follower(self, records: Any, leader: int, leader_epoch: int) -> int:
        """Batches fetched from ``leader``, appended with the offsets and epochs the leader
        gave them (each must continue this log exactly); the producers' state and the epoch
        cache follow them. Refused (NotLeaderOrFollowerError) unless this replica still
        follows ``leader`` in ``leader_epoch``: a response that crossed a leadership change is
        dropped, never appended. Returns the records appended."""

        def append(data: Any) -> tuple[int, bool]:
            if (self.leader_id, self.leader_epoch) != (leader, leader_epoch) or self.is_leader:
                raise NotLeaderOrFollowerError(
                    f"partition {self.topic}-{self.index} no longer follows broker {leader} in epoch "
                    f"{leader_epoch}",
                    topic=self.topic,
                    partition=self.index,
                )
            headers = [h for h, _ in iter_batches(as_view(data))]
            res = self.log.append_batches(data, assign_offsets=False)
            now = self.clock.wall_ms()
            epochs_changed = False
            for h in headers:
                if h.producer_id >= 0:
                    self.producer_state.record_batch(h, h.base_offset, now)
                epochs_changed |= self.epochs.assign(h.partition_leader_epoch, h.base_offset)
            return res.record_count, epochs_changed

        first = next((h for h, _ in iter_batches(as_view(records))), None)
        end = self.log.end_offset
        if first is not None and end == self.log.start_offset and first.base_offset < end < first.next_offset:
            # An empty log restarted at the leader's log start, which falls inside this batch
            # (DeleteRecords cuts anywhere): restart at the batch, as Kafka's followers do.
            await self._exclusive(self._restart_at, first.base_offset)
        count, epochs_changed = await self._locked_append(append, records, len(records))
        if epochs_changed:
            await trio.to_thread.run_sync(self.epochs.write)
        if count and self.appended(count):
            await self.flush()
        return count

    async def truncate_to(self, offset: int) -> None:
        """As follower: cuts the log's tail from ``offset`` (a divergent tail an old leader
        wrote and never committed), with the epoch cache and the producers' state rebuilt to
        match, in a worker thread with no append running. At or past the log end only epochs
        that start there are dropped."""
        await self._exclusive(self._truncate, offset)

    def _truncate(self, offset: int) -> None:
        before = self.log.end_offset
        if offset >= before:
            # Nothing to cut, but an epoch this broker began as leader at its log end and
            # wrote nothing in is unknown to the new leader: it goes, as in Kafka, or every
            # fetch would carry it as the last fetched epoch and be found diverging again.
            if self.epochs.truncate_from_end(before):
                self.epochs.write()
            return
        self.log.truncate_to(offset)
        end = self.log.end_offset
        logger.warning(
            "partition %s-%d: log truncated from %d to %d to match leader %d in epoch %d",
            self.topic,
            self.index,
            before,
            end,
            self.leader_id,
            self.leader_epoch,
        )
        if self.epochs.truncate_from_end(end):
            self.epochs.write()
        self.producer_state = ProducerStateManager(self.log.path, self.producer_state.expiration_ms)
        self._load_producer_state()
        self._hw = min(self._hw, end)
        self.opened_end = min(self.opened_end, end)

    async def follow_log_start(self, leader_start: int) -> None:
        """As follower: takes up the leader's log start offset, as Kafka's followers do, so
        that what the leader deleted (DeleteRecords, retention, the compaction of
        ``__consumer_offsets``) goes here too. If the leader's log starts past this log's end
        (it deleted what this replica never copied), this log restarts there empty, with no
        epochs and no producers before it, and copies the leader from there."""
        if leader_start > self.log.end_offset:
            await self._exclusive(self._restart_at, leader_start)
        elif leader_start > self.log.start_offset:
            await self._exclusive(self.log.delete_records_before, leader_start)

    async def _exclusive(self, fn: Callable[[int], None], offset: int) -> None:
        """Runs ``fn(offset)`` (blocking I/O on the log) in a worker thread with no append
        running; UnknownTopicOrPartitionError if the partition was retired."""
        async with self._append_lock:
            self._check_live()
            await trio.to_thread.run_sync(fn, offset)

    def _restart_at(self, offset: int) -> None:
        end = self.log.end_offset
        self.log.truncate_fully_and_start_at(offset)
        logger.warning(
            "partition %s-%d: log restarted at %d (it ended at %d): leader %d's log starts there",
            self.topic,
            self.index,
            offset,
            end,
            self.leader_id,
        )
        self.epochs.clear()
        self.epochs.write()
        self.producer_state = ProducerStateManager(self.log.path, self.producer_state.expiration_ms)
        self.producer_state.write_snapshot(offset, self.producer_state.snapshot())
        self._hw = max(self._hw, offset)
        self.verified_to = max(self.verified_to, offset)

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
        """An event set when the high watermark next moves (what consumers may read)."""
        return self._hw_moved

    def wait_for_append(self) -> trio.Event:
        """An event set by the next append (what followers fetch)."""
        return self._appended

    def appended(self, records: int) -> bool:
        """Wakes fetchers; returns True if the flush policy says to fsync now."""
        self._appended.set()
        self._appended = trio.Event()
        self._maybe_advance_hw()
        self.unflushed += records
        due = self.flush_messages is not None and self.unflushed >= self.flush_messages
        return due or (
            self.flush_ms is not None and (self.clock.monotonic() - self.last_flush) * 1000 >= self.flush_ms
        )

    async def flush(self) -> None:
        """fsync in a worker thread: never on the event loop."""
        self.unflushed = 0
        self.last_flush = started = self.clock.monotonic()
        try:
            await trio.to_thread.run_sync(self.log.flush)
        except LogClosedError:
            if not self.retired:
                raise
        self.flush_times.observe((self.clock.monotonic() - started) * 1000)

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
