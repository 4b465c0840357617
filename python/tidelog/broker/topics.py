"""The topics this broker hosts: creation, deletion, partition growth and configs, persisted
under ``<data dir>/meta/topics/`` (one JSON document per topic, replaced atomically)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from tidelog.broker.clock import Clock
from tidelog.broker.config import BrokerConfig
from tidelog.broker.partition import OfflinePartition, Partition
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.storage import Log
from tidelog.storage.fileio import sync_dir, write_file_atomic

log = logging.getLogger("tidelog.broker")
LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
DELETE_SUFFIX = "-delete"  # partition directories being deleted, as Kafka names them


class TopicError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Topic:
    name: str
    topic_id: uuid.UUID
    configs: dict[str, str]
    partitions: list[Partition | OfflinePartition] = field(default_factory=list)
    internal: bool = False


class TopicManager:
    def __init__(self, config: BrokerConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.meta_dir = os.path.join(config.data_dir, "meta", "topics")
        self.topics: dict[str, Topic] = {}
        self.by_id: dict[uuid.UUID, Topic] = {}
        self._creating: set[str] = set()  # names being created in a worker thread
        self._deleting: set[str] = set()  # names whose logs are being closed and moved aside
        self._admin_lock = trio.Lock()  # one partition-count or config change at a time
        self._purge_wanted = trio.Event()
        self._reserved = 0  # partitions being created, counted against the limit

    def load(self) -> None:
        os.makedirs(self.meta_dir, exist_ok=True)
        for name in sorted(os.listdir(self.meta_dir)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(self.meta_dir, name)) as f:
                doc = json.load(f)
            topic = Topic(
                doc["name"],
                uuid.UUID(doc["id"]),
                dict(doc.get("configs", {})),
                internal=doc.get("internal", False),
            )
            self._open_partitions(topic, int(doc["partitions"]))
            self._register(topic)
        self._log_recovery_summary()

    def _log_recovery_summary(self) -> None:
        """One line at start-up: what was loaded, and what recovery had to repair (each
        repaired log also has its own WARN line from ``tidelog.storage``)."""
        reports = [
            (f"{t.name}-{p.index}", p.log.recovery_report)
            for t in self.topics.values()
            for p in self.online(t)
        ]
        unclean = sum(1 for _, r in reports if not r.clean_shutdown)
        repaired = [name for name, r in reports if r.truncations or r.next_offset_raised_to is not None]
        cut = sum(r.bytes_truncated for _, r in reports)
        offline = sum(len(t.partitions) for t in self.topics.values()) - len(reports)
        summary = (
            f"loaded {len(self.topics)} topics, {len(reports)} partitions from {self.config.data_dir}: "
            f"{unclean} recovered after an unclean shutdown, {len(repaired)} repaired ({cut} bytes cut), "
            f"{offline} offline"
        )
        if repaired or offline:
            log.warning("%s: %s", summary, ", ".join(repaired[:20]) + (" ..." if len(repaired) > 20 else ""))
        else:
            log.info("%s", summary)

    def _register(self, topic: Topic) -> None:
        self.topics[topic.name] = topic
        self.by_id[topic.topic_id] = topic

    def _persist(self, topic: Topic) -> None:
        doc = {
            "name": topic.name,
            "id": str(topic.topic_id),
            "partitions": len(topic.partitions),
            "configs": topic.configs,
            "internal": topic.internal,
        }
        write_file_atomic(self.meta_dir, f"{topic.name}.json", json.dumps(doc, indent=1).encode())

    def _log_settings(self, topic: Topic) -> tuple[dict[str, Any], Any, Any]:
        """The log's settings, and the flush policy, which the partition applies itself so that
        fsync runs in a worker thread rather than inside an append on the event loop."""
        settings = dict(self.config.log_config(topic.configs).to_kafka())
        return settings, settings.pop("flush.messages"), settings.pop("flush.ms")

    def _open_partitions(self, topic: Topic, count: int, *, fresh: bool = False) -> None:
        """Opens partitions ``len(topic.partitions)..count-1``. ``fresh``: they are new, so a
        directory already there is a leftover of an earlier topic of that name whose deletion
        or creation was cut short; it is moved aside, never reused. A fresh set is all or
        nothing: if one fails, the ones opened are closed and moved aside again."""
        settings, flush_messages, flush_ms = self._log_settings(topic)
        first = len(topic.partitions)
        try:
            for p in range(first, count):
                path = self._partition_dir(topic.name, p)
                if fresh and os.path.exists(path):
                    log.warning("%s exists without a topic: moved aside for deletion", path)
                    self._move_aside(path)
                try:
                    plog = Log.open(path, engine=self.config.engine, config=settings)
                except (TidelogError, OSError) as e:
                    if fresh:
                        raise
                    # One partition's failed disk or files never keep the broker down.
                    log.error("partition %s-%d is offline: its log could not be opened: %s", topic.name, p, e)
                    topic.partitions.append(OfflinePartition(topic.name, p, path, str(e)))
                    continue
                topic.partitions.append(
                    Partition(
                        topic.name,
                        p,
                        plog,
                        flush_messages,
                        flush_ms,
                        self.config.producer_id_expiration_ms,
                        self.clock,
                    )
                )
        except BaseException:
            if fresh:
                failed = self._partition_dir(topic.name, len(topic.partitions))
                for part in topic.partitions[first:]:
                    assert isinstance(part, Partition)  # fresh ones are never offline
                    part.log.close()
                    self._move_aside(part.log.path)
                del topic.partitions[first:]
                if os.path.exists(failed):  # the one whose opening failed, half made
                    self._move_aside(failed)
            raise

    def _partition_dir(self, name: str, index: int) -> str:
        return os.path.join(self.config.data_dir, f"{name}-{index}")

    def _move_aside(self, path: str) -> None:
        """Renames a partition directory to Kafka's ``<topic>-<p>.<uuid>-delete`` (durably), so
        its name is free at once; ``purge_loop`` removes it later."""
        os.rename(path, f"{path}.{uuid.uuid4().hex}{DELETE_SUFFIX}")
        sync_dir(self.config.data_dir)

    async def purge_loop(self) -> None:
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

    def validate_configs(self, configs: dict[str, str]) -> None:
        policy = configs.get("cleanup.policy", "delete")
        if policy != "delete":
            raise TopicError(ec.INVALID_CONFIG, f"cleanup.policy={policy} is not supported (only delete)")
        try:
            self.config.log_config(configs)
        except ValueError as e:
            raise TopicError(ec.INVALID_CONFIG, str(e)) from None

    async def create_async(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: dict[str, str],
        validate_only: bool = False,
        internal: bool = False,
    ) -> Topic:
        """Creates a topic: the logs are opened and the metadata written in a worker thread;
        the topic is registered (made visible) on the event loop."""
        topic = self._check_new(name, partitions, replication_factor, configs, internal)
        self._check_limit(len(topic.partitions))
        if validate_only:
            return topic
        self._creating.add(name)
        self._reserved += len(topic.partitions)
        try:
            await self._in_thread(self._build, topic)
        finally:
            self._creating.discard(name)
            self._reserved -= len(topic.partitions)
        self._register(topic)
        return topic

    async def _in_thread(self, fn: Callable[..., None], *args: Any) -> None:
        """Runs a topic or partition creation in a worker thread; a failure of the disk (or of
        the descriptor limit) becomes KAFKA_STORAGE_ERROR, with what was created moved aside."""
        try:
            await trio.to_thread.run_sync(fn, *args)
        except (TidelogError, OSError) as e:
            self._purge_wanted.set()
            log.error("could not create partitions: %s", e)
            raise TopicError(ec.KAFKA_STORAGE_ERROR, f"could not create the partitions' logs: {e}") from e

    def _check_limit(self, adding: int) -> None:
        """Refuses, before anything is created, partitions beyond ``tidelog.max.partitions``
        (by default what the descriptor limit allows): running out of descriptors half-way
        would leave a topic half made and starve new connections."""
        limit = self.config.partition_limit()
        hosted = sum(len(t.partitions) for t in self.topics.values()) + self._reserved
        if hosted + adding > limit:
            raise TopicError(
                ec.POLICY_VIOLATION,
                f"{adding} more partitions would make {hosted + adding}, above this broker's limit of "
                f"{limit} (tidelog.max.partitions; by default set by the open-files limit, ulimit -n)",
            )

    def _check_new(
        self, name: str, partitions: int, replication_factor: int, configs: dict[str, str], internal: bool
    ) -> Topic:
        """Validates a new topic; returns it with placeholder partitions (not yet opened)."""
        if not LEGAL_TOPIC.fullmatch(name) or name in (".", ".."):
            raise TopicError(ec.INVALID_TOPIC_EXCEPTION, f"illegal topic name {name!r}")
        if name in self.topics or name in self._creating:
            raise TopicError(ec.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        if name in self._deleting:
            raise TopicError(ec.TOPIC_ALREADY_EXISTS, f"topic {name!r} is marked for deletion")
        if partitions == -1:
            partitions = self.config.num_partitions
        if partitions < 1:
            raise TopicError(
                ec.INVALID_PARTITIONS, f"number of partitions must be positive, not {partitions}"
            )
        if replication_factor not in (-1, 1):
            raise TopicError(
                38, f"replication factor {replication_factor} is larger than the 1 broker available"
            )
        self.validate_configs(configs)
        topic = Topic(name, uuid.uuid4(), dict(configs), internal=internal)
        topic.partitions = [None] * partitions  # type: ignore[list-item]
        return topic

    def _build(self, topic: Topic) -> None:
        """Opens the partition logs and writes the topic's metadata (blocking I/O)."""
        count = len(topic.partitions)
        topic.partitions = []
        self._open_partitions(topic, count, fresh=True)
        try:
            self._persist(topic)
        except BaseException:
            self._remove(topic)
            raise
        log.info("created topic %s with %d partitions", topic.name, count)

    async def add_partitions(self, name: str, count: int, validate_only: bool = False) -> None:
        """Grows a topic: the new logs open in a worker thread, then join the topic."""
        topic = self.topics.get(name)
        if topic is None:
            raise TopicError(ec.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        if count <= len(topic.partitions):
            raise TopicError(
                37, f"topic {name!r} has {len(topic.partitions)} partitions; {count} is not more"
            )
        self._check_limit(count - len(topic.partitions))
        if validate_only:
            return
        async with self._admin_lock:
            if self.topics.get(name) is not topic or count <= len(topic.partitions):
                raise TopicError(ec.INVALID_PARTITIONS, f"topic {name!r} changed while the request waited")
            added = count - len(topic.partitions)
            self._check_limit(added)
            grown = Topic(topic.name, topic.topic_id, topic.configs, list(topic.partitions), topic.internal)
            self._reserved += added
            try:
                await self._in_thread(lambda: self._open_partitions(grown, count, fresh=True))
            finally:
                self._reserved -= added
            topic.partitions = grown.partitions
            await trio.to_thread.run_sync(self._persist, topic)

    async def alter_configs(
        self, name: str, configs: dict[str, str | None], validate_only: bool = False
    ) -> None:
        """Validates and persists (in a worker thread) a topic's new configs, then applies them
        to its open logs in place."""
        topic = self.topics.get(name)
        if topic is None:
            raise TopicError(ec.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        merged = {k: v for k, v in {**topic.configs, **configs}.items() if v is not None}
        self.validate_configs(merged)
        if validate_only:
            return
        async with self._admin_lock:
            if self.topics.get(name) is not topic:
                raise TopicError(
                    ec.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} was deleted while the request waited"
                )
            previous, topic.configs = topic.configs, merged
            try:
                await trio.to_thread.run_sync(self._persist, topic)
            except BaseException:
                topic.configs = previous
                raise
            settings, flush_messages, flush_ms = self._log_settings(topic)
            for part in self.online(topic):
                part.log.reconfigure(config=settings)
                part.flush_messages, part.flush_ms = flush_messages, flush_ms
        log.info("topic %s configs now %s", name, merged)

    async def delete(self, name: str) -> Topic:
        """As Kafka: the topic is unregistered at once; appends in progress finish and later
        ones are refused; then (in a worker thread) its metadata is removed and its partition
        directories are closed and renamed to ``-delete`` names, which frees the name for a new
        topic with fresh directories. The files are removed in the background."""
        async with self._admin_lock:
            topic = self.topics.pop(name, None)
            if topic is None:
                raise TopicError(ec.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
            del self.by_id[topic.topic_id]
            self._deleting.add(name)
            try:
                for part in self.online(topic):
                    await part.retire()
                await trio.to_thread.run_sync(self._remove, topic)
            finally:
                self._deleting.discard(name)
                self._purge_wanted.set()
        log.info("deleted topic %s", name)
        return topic

    def _remove(self, topic: Topic) -> None:
        """Removes the topic's metadata, then closes and moves aside its logs (blocking I/O).
        A crash in between leaves directories without a topic, moved aside if the name is
        used again."""
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.meta_dir, f"{topic.name}.json"))
        for part in topic.partitions:
            if isinstance(part, Partition):
                part.log.close()
            self._move_aside(part.log.path if isinstance(part, Partition) else part.path)

    def _hosted(self, name: str, index: int) -> Partition | OfflinePartition | None:
        topic = self.topics.get(name)
        if topic is None or not 0 <= index < len(topic.partitions):
            return None
        return topic.partitions[index]

    def partition(self, name: str, index: int) -> Partition | None:
        """The partition, if this broker has it online."""
        part = self._hosted(name, index)
        return part if isinstance(part, Partition) else None

    def missing_code(self, name: str, index: int) -> int:
        """Why ``partition(name, index)`` is None: an offline partition's KAFKA_STORAGE_ERROR,
        else UNKNOWN_TOPIC_OR_PARTITION."""
        if isinstance(self._hosted(name, index), OfflinePartition):
            return ec.KAFKA_STORAGE_ERROR
        return ec.UNKNOWN_TOPIC_OR_PARTITION

    def online(self, topic: Topic) -> list[Partition]:
        return [p for p in topic.partitions if isinstance(p, Partition)]

    def effective_configs(self, topic: Topic) -> dict[str, Any]:
        return {
            **self.config.log_config(topic.configs).to_kafka(),
            "cleanup.policy": "delete",
            **topic.configs,
        }

    def close(self) -> None:
        """Closes every partition cleanly; one that cannot be (a full or failed disk) is
        logged and left for recovery at the next start, and the others still close."""
        for topic in self.topics.values():
            for part in self.online(topic):
                try:
                    part.close()
                except TidelogError as e:
                    log.error("partition %s-%d not closed cleanly: %s", topic.name, part.index, e)
