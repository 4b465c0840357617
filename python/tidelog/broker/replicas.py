"""The replicas this broker hosts. The replica manager applies each new ``MetadataImage``:
it opens the logs of partitions assigned to this broker, closes and deletes those of
partitions that are gone, applies changed topic configs in place, gives each partition the
role the image says (leader, or follower fed by the replica fetchers), and tells the services
that care (the group coordinator) which partitions this broker now leads or no longer leads.
As leader it keeps the ISR: followers that have not caught up for
``replica.lag.time.max.ms`` are taken out, and those caught up to the high watermark are
taken back, through the controller's conditional ``alter_isr``. High watermarks are
checkpointed to ``replication-offset-checkpoint`` and restored at start. A
partition's log that cannot be opened makes it an ``OfflinePartition`` while every other is
served. Deleted partitions' directories are renamed to Kafka's ``<topic>-<p>.<uuid>-delete``
and removed in the background."""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import trio

from tidelog.broker.checkpoints import REPLICATION_OFFSET_CHECKPOINT, read_offsets, write_checkpoint
from tidelog.broker.clock import Clock
from tidelog.broker.config import BrokerConfig, Endpoint
from tidelog.broker.metadata import MetadataImage, PartitionMetadata, TopicMetadata
from tidelog.broker.metrics import BrokerMetrics
from tidelog.broker.partition import OfflinePartition, Partition
from tidelog.broker.replica_fetcher import ReplicaFetcherManager
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.storage import Log
from tidelog.storage.fileio import sync_dir

log = logging.getLogger("tidelog.broker")
DELETE_SUFFIX = "-delete"  # partition directories being deleted, as Kafka names them
#: Called with (topic name, partition index) when this broker starts or stops leading it.
LeadershipListener = Callable[[str, int, bool], Awaitable[None]]
#: The controller's ``alter_isr``: (topic, partition, leader epoch, new ISR) -> made.
AlterIsr = Callable[[str, int, int, tuple[int, ...]], Awaitable[bool]]
Hosted = Partition | OfflinePartition


class ReplicaManager:
    """Hosts this broker's partitions by (topic id, index), each as its image says: leader
    or follower. ``run`` hosts the fetchers and the ISR, checkpoint and purge loops."""

    def __init__(self, config: BrokerConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.image = MetadataImage()
        self._hosted: dict[tuple[uuid.UUID, int], Hosted] = {}
        self._purge_wanted = trio.Event()
        self.leadership_listeners: list[LeadershipListener] = []
        #: Set by the broker to its controller's ``alter_isr``.
        self.alter_isr: AlterIsr | None = None
        #: Where ISR changes are counted (the broker's metrics).
        self.metrics = BrokerMetrics()
        self.fetchers = ReplicaFetcherManager(config, self._inter_broker_endpoint)
        self._isr_wanted = trio.Event()
        self._checkpointed: dict[tuple[str, int], int] = {}
        self.max_lag_s = int(config.setting("replica.lag.time.max.ms")) / 1000

    # ---- lookups ----

    def hosted(self, name: str, index: int) -> Hosted | None:
        topic = self.image.topic(name)
        return None if topic is None else self._hosted.get((topic.topic_id, index))

    def partition(self, name: str, index: int) -> Partition | None:
        """The partition, if this broker has it online."""
        part = self.hosted(name, index)
        return part if isinstance(part, Partition) else None

    def missing_code(self, name: str, index: int) -> int:
        """Why ``partition(name, index)`` is None: an offline partition's KAFKA_STORAGE_ERROR,
        else UNKNOWN_TOPIC_OR_PARTITION."""
        if isinstance(self.hosted(name, index), OfflinePartition):
            return ec.KAFKA_STORAGE_ERROR
        return ec.UNKNOWN_TOPIC_OR_PARTITION

    def online(self, name: str) -> list[Partition]:
        """The topic's partitions online here, by index."""
        topic = self.image.topic(name)
        if topic is None:
            return []
        found = (self._hosted.get((topic.topic_id, p.index)) for p in topic.partitions)
        return [p for p in found if isinstance(p, Partition)]

    def all_online(self) -> Iterator[Partition]:
        return (p for p in list(self._hosted.values()) if isinstance(p, Partition))

    # ---- opening and removing logs ----

    def _partition_dir(self, name: str, index: int) -> str:
        return os.path.join(self.config.data_dir, f"{name}-{index}")

    def _log_settings(self, topic: TopicMetadata) -> tuple[dict[str, Any], Any, Any]:
        """The log's settings, and the flush policy, which the partition applies itself so that
        fsync runs in a worker thread rather than inside an append on the event loop."""
        settings = dict(self.config.log_config(topic.configs).to_kafka())
        return settings, settings.pop("flush.messages"), settings.pop("flush.ms")

    def _open(
        self, topic: TopicMetadata, parts: Sequence[PartitionMetadata], fresh: bool, strict: bool
    ) -> list[Hosted]:
        """Opens the partitions ``parts`` of ``topic`` (blocking I/O). ``fresh``: they are new,
        so a directory already there is a leftover of an earlier topic of that name whose
        deletion or creation was cut short; it is moved aside, never reused. ``strict``: all
        or nothing; if one fails, the ones opened are closed and moved aside again and the
        error is raised. Otherwise a log that cannot be opened makes its partition offline."""
        settings, flush_messages, flush_ms = self._log_settings(topic)
        opened: list[Hosted] = []
        try:
            for p in parts:
                path = self._partition_dir(topic.name, p.index)
                if fresh and os.path.exists(path):
                    log.warning("%s exists without a topic: moved aside for deletion", path)
                    self._move_aside(path)
                try:
                    plog = Log.open(path, engine=self.config.engine, config=settings)
                except (TidelogError, OSError) as e:
                    if strict:
                        raise
                    # One partition's failed disk or files never keep the broker down.
                    log.error(
                        "partition %s-%d is offline: its log could not be opened: %s", topic.name, p.index, e
                    )
                    opened.append(OfflinePartition(topic.name, p.index, path, str(e)))
                    continue
                part = Partition(
                    topic.name,
                    p.index,
                    plog,
                    flush_messages,
                    flush_ms,
                    self.config.producer_id_expiration_ms,
                    self.clock,
                    node_id=self.config.node_id,
                    high_watermark=0 if fresh else self._checkpointed.get((topic.name, p.index), 0),
                )
                opened.append(part)
        except BaseException:
            if strict:
                for made in opened:
                    assert isinstance(made, Partition)  # strict ones are never offline
                    made.log.close()
                    self._move_aside(made.log.path)
                failed = self._partition_dir(topic.name, parts[len(opened)].index)
                if os.path.exists(failed):  # the one whose opening failed, half made
                    self._move_aside(failed)
            raise
        return opened

    def _host(self, topic: TopicMetadata, parts: list[Hosted]) -> None:
        for part in parts:
            self._hosted[(topic.topic_id, part.index)] = part

    async def create_logs(self, topic: TopicMetadata, first: int) -> None:
        """Opens fresh logs for partitions ``first..`` of a topic being created or grown, all
        or nothing, in a worker thread. They are served once an image names them."""
        try:
            opened = await trio.to_thread.run_sync(self._open, topic, topic.partitions[first:], True, True)
        except BaseException:
            self._purge_wanted.set()
            raise
        self._host(topic, opened)

    async def discard_logs(self, topic: TopicMetadata, first: int) -> None:
        """Undoes ``create_logs``: closes those logs and moves them aside (in a worker thread)."""
        parts = [
            hosted
            for p in topic.partitions[first:]
            if (hosted := self._hosted.pop((topic.topic_id, p.index), None))
        ]
        try:
            await trio.to_thread.run_sync(self._remove, parts)
        finally:
            self._purge_wanted.set()

    def _remove(self, parts: list[Hosted]) -> None:
        """Closes retired partitions and moves their directories aside (blocking I/O)."""
        for part in parts:
            if isinstance(part, Partition):
                part.log.close()
            self._move_aside(part.log.path if isinstance(part, Partition) else part.path)

    def _move_aside(self, path: str) -> None:
        """Renames a partition directory to Kafka's ``<topic>-<p>.<uuid>-delete`` (durably), so
        its name is free at once; the purge loop (in ``run``) removes it later."""
        os.rename(path, f"{path}.{uuid.uuid4().hex}{DELETE_SUFFIX}")
        sync_dir(self.config.data_dir)

    async def run(self) -> None:
        """The replica fetchers and the ISR, high-watermark checkpoint and purge loops."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.fetchers.run)
            nursery.start_soon(self._isr_loop)
            nursery.start_soon(self._checkpoint_loop)
            nursery.start_soon(self._purge_loop)

    # ---- the ISR, as leader ----

    def isr_change_wanted(self) -> None:
        """A follower caught up (or the ISR needs a look for another reason)."""
        self._isr_wanted.set()

    async def _isr_loop(self) -> None:
        """Every half of ``replica.lag.time.max.ms`` (as Kafka), or when a follower catches
        up: each partition led here whose ISR should change asks the controller, one change
        at a time per partition."""
        while True:
            with trio.move_on_after(self.max_lag_s / 2):
                await self._isr_wanted.wait()
            self._isr_wanted = trio.Event()
            for part in list(self.all_online()):
                proposed = part.proposed_isr(self.max_lag_s)
                if proposed is None or self.alter_isr is None:
                    continue
                part.pending_isr = proposed
                before = len(part.isr)
                made = await self.alter_isr(part.topic, part.index, part.leader_epoch, proposed)
                if not made and part.pending_isr == proposed:
                    part.pending_isr = None
                elif made and len(proposed) < before:
                    self.metrics.isr_shrinks += 1
                elif made:
                    self.metrics.isr_expands += 1

    # ---- high watermarks ----

    def _checkpoint_path(self) -> str:
        return os.path.join(self.config.data_dir, REPLICATION_OFFSET_CHECKPOINT)

    def _write_checkpoint(self, entries: list[tuple[str, int, int]]) -> None:
        try:
            write_checkpoint(self._checkpoint_path(), entries)
        except (TidelogError, OSError) as e:  # a full disk: the last one written still holds
            log.warning("high watermarks not checkpointed: %s", e)

    def _high_watermarks(self) -> list[tuple[str, int, int]]:
        return [(p.topic, p.index, p.high_watermark) for p in self.all_online() if not p.log.closed]

    async def _checkpoint_loop(self) -> None:
        interval = int(self.config.setting("replica.high.watermark.checkpoint.interval.ms")) / 1000
        while True:
            await trio.sleep(interval)
            await trio.to_thread.run_sync(self._write_checkpoint, self._high_watermarks())

    async def _purge_loop(self) -> None:
        """Removes moved-aside partition directories in a worker thread: those of topics
        deleted now and any a crash left behind."""
        self._purge_wanted.set()
        while True:
            await self._purge_wanted.wait()
            self._purge_wanted = trio.Event()
            await trio.to_thread.run_sync(self._purge)

    def _purge(self) -> None:
        for name in os.listdir(self.config.data_dir):
            if name.endswith(DELETE_SUFFIX):
                shutil.rmtree(os.path.join(self.config.data_dir, name), ignore_errors=True)

    # ---- applying images ----

    def load(self, image: MetadataImage) -> None:
        """Opens every partition of the first image that this broker hosts, each in the role
        the image gives it and with its checkpointed high watermark (blocking I/O, at start,
        before anything is served)."""
        me = self.config.node_id
        os.makedirs(self.config.data_dir, exist_ok=True)
        self._checkpointed = read_offsets(self._checkpoint_path())
        for topic in image.topics.values():
            self._host(
                topic, self._open(topic, [p for p in topic.partitions if me in p.replicas], False, False)
            )
        self.image = image
        _write_epochs(self._take_roles(image.topics.values()))
        self._log_recovery_summary()

    def _take_roles(self, topics: Iterable[TopicMetadata]) -> list[Partition]:
        """Gives the partitions of ``topics`` hosted here their role, ``min.insync.replicas``
        and followers' fetchers; returns those whose leader-epoch cache must be written."""
        epochs_changed = []
        for topic in topics:
            min_insync = self.config.topic_setting(topic.configs, "min.insync.replicas")
            for p in topic.partitions:
                part = self._hosted.get((topic.topic_id, p.index))
                if isinstance(part, Partition):
                    part.min_insync_replicas = min_insync
                    if part.set_state(p):
                        epochs_changed.append(part)
        following: dict[int, dict[tuple[str, int], Partition]] = {}
        for part in self.all_online():
            if not part.is_leader and part.leader_id >= 0:
                following.setdefault(part.leader_id, {})[(part.topic, part.index)] = part
        self.fetchers.update(following)
        return epochs_changed

    def _inter_broker_endpoint(self, node_id: int) -> Endpoint | None:
        """Where followers fetch from broker ``node_id``: its ``inter.broker.listener.name``
        listener (default: this broker's first listener's name), if it is registered."""
        broker = self.image.brokers.get(node_id)
        if broker is None:
            return None
        name = self.config.inter_broker_listener()
        return broker.endpoint(name) or (broker.endpoints[0] if broker.endpoints else None)

    async def announce_leadership(self) -> None:
        """Tells the leadership listeners about every partition led here (at start)."""
        me = self.config.node_id
        for topic in list(self.image.topics.values()):
            for p in topic.partitions:
                if p.leader == me:
                    for listener in self.leadership_listeners:
                        await listener(topic.name, p.index, True)

    async def apply(self, image: MetadataImage) -> None:
        """Moves this broker from the image in force to ``image``: partitions new here are
        hosted (their logs were made by ``create_logs``, else they are opened now, in a worker
        thread) before the image is installed, so no request finds a topic without its
        partitions; removed ones are retired after it (appends in progress finish, later ones
        are refused), then closed and moved aside in a worker thread."""
        old, me = self.image, self.config.node_id

        def led(t: TopicMetadata | None, index: int) -> bool:
            return t is not None and index < len(t.partitions) and t.partitions[index].leader == me

        changes: list[tuple[str, int, bool]] = []  # (topic, partition, led here now)
        reconfigured: list[TopicMetadata] = []
        for topic in image.topics.values():
            before = old.topic_by_id(topic.topic_id)
            if before is topic:
                continue
            missing = [
                p
                for p in topic.partitions
                if me in p.replicas and (topic.topic_id, p.index) not in self._hosted
            ]
            if missing:
                # New here while serving: a directory of that name is a leftover (moved aside).
                opened = await trio.to_thread.run_sync(self._open, topic, missing, True, False)
                self._host(topic, opened)
            if before is not None and before.configs != topic.configs:
                reconfigured.append(topic)
            changes += [
                (topic.name, p.index, p.leader == me)
                for p in topic.partitions
                if (p.leader == me) != led(before, p.index)
            ]
        gone = [t for t in old.topics.values() if image.topic_by_id(t.topic_id) is None]
        self.image = image
        changed = [t for t in image.topics.values() if old.topic_by_id(t.topic_id) is not t]
        epochs_changed = self._take_roles(changed)
        if epochs_changed:
            await trio.to_thread.run_sync(_write_epochs, epochs_changed)
        for topic in reconfigured:
            settings, flush_messages, flush_ms = self._log_settings(topic)
            for part in self.online(topic.name):
                part.log.reconfigure(config=settings)
                part.flush_messages, part.flush_ms = flush_messages, flush_ms
        for topic in gone:
            parts = [
                hosted
                for p in topic.partitions
                if (hosted := self._hosted.pop((topic.topic_id, p.index), None))
            ]
            for listener in self.leadership_listeners:
                for hosted in parts:
                    await listener(topic.name, hosted.index, False)
            try:
                for hosted in parts:
                    if isinstance(hosted, Partition):
                        await hosted.retire()
                await trio.to_thread.run_sync(self._remove, parts)
            finally:
                self._purge_wanted.set()
        for name, index, leader in changes:
            for listener in self.leadership_listeners:
                await listener(name, index, leader)

    def _log_recovery_summary(self) -> None:
        """One line at start-up: what was loaded, and what recovery had to repair (each
        repaired log also has its own WARN line from ``tidelog.storage``)."""
        reports = [(f"{p.topic}-{p.index}", p.log.recovery_report) for p in self.all_online()]
        unclean = sum(1 for _, r in reports if not r.clean_shutdown)
        repaired = [name for name, r in reports if r.truncations or r.next_offset_raised_to is not None]
        cut = sum(r.bytes_truncated for _, r in reports)
        offline = len(self._hosted) - len(reports)
        summary = (
            f"loaded {len(self.image.topics)} topics, {len(reports)} partitions from {self.config.data_dir}: "
            f"{unclean} recovered after an unclean shutdown, {len(repaired)} repaired ({cut} bytes cut), "
            f"{offline} offline"
        )
        if repaired or offline:
            log.warning("%s: %s", summary, ", ".join(repaired[:20]) + (" ..." if len(repaired) > 20 else ""))
        else:
            log.info("%s", summary)

    def close(self) -> None:
        """Checkpoints the high watermarks and closes every partition cleanly; one that cannot
        be (a full or failed disk) is logged and left for recovery at the next start, and the
        others still close."""
        self._write_checkpoint(self._high_watermarks())
        for part in self.all_online():
            try:
                part.close()
            except TidelogError as e:
                log.error("partition %s-%d not closed cleanly: %s", part.topic, part.index, e)


def _write_epochs(parts: list[Partition]) -> None:
    for part in parts:
        part.epochs.write()
