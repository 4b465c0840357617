"""Every change to the cluster's metadata goes through a ``Controller``: topics created and
deleted, partitions added, configs altered, producer-id blocks allocated. Each change ends
with a new ``MetadataImage`` published to the replica manager. ``LocalController`` is a
single broker's controller: the metadata lives in files under ``meta/`` (one JSON file per
topic, one per user with SCRAM credentials, ``meta.properties``, ``producer-ids``), and
since the controller and the only replica are one process, a creation is all or nothing: the
logs are made before the metadata is written, and removed again if that fails. A cluster's
controller (``cluster.etcd_controller``) implements the same protocol; replica placement is
shared (``assign_replicas``)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import urllib.parse
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import trio

from tidelog.broker.authorizer import AclBinding
from tidelog.broker.config import BrokerConfig, Endpoint
from tidelog.broker.metadata import (
    NO_LEADER,
    BrokerMetadata,
    MetadataImage,
    PartitionMetadata,
    TopicMetadata,
    single_replica,
)
from tidelog.broker.quotas import Entity, entity_from_key
from tidelog.broker.quotas import docs as quota_docs
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.scram import (
    CredentialChanges,
    UserCredentials,
    altered,
    credentials_doc,
    credentials_from_doc,
)
from tidelog.storage.fileio import write_file_atomic

if TYPE_CHECKING:
    from tidelog.broker.replicas import ReplicaManager

log = logging.getLogger("tidelog.broker")
LEGAL_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
PRODUCER_ID_BLOCK = 1000


class TopicError(Exception):
    """A metadata change refused, with the Kafka error code the client gets."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def validate_configs(config: BrokerConfig, configs: Mapping[str, str]) -> None:
    """Refuses (INVALID_CONFIG) topic configs this broker cannot honour."""
    policy = configs.get("cleanup.policy", "delete")
    if policy != "delete":
        raise TopicError(ec.INVALID_CONFIG, f"cleanup.policy={policy} is not supported (only delete)")
    try:
        config.log_config(configs)
    except ValueError as e:
        raise TopicError(ec.INVALID_CONFIG, str(e)) from None


def check_new_topic(config: BrokerConfig, name: str, partitions: int, configs: Mapping[str, str]) -> int:
    """Validates a new topic's name, partition count (-1: ``num.partitions``) and configs;
    returns the partition count."""
    if not LEGAL_TOPIC.fullmatch(name) or name in (".", ".."):
        raise TopicError(ec.INVALID_TOPIC_EXCEPTION, f"illegal topic name {name!r}")
    if partitions == -1:
        partitions = config.num_partitions
    if partitions < 1:
        raise TopicError(ec.INVALID_PARTITIONS, f"number of partitions must be positive, not {partitions}")
    validate_configs(config, configs)
    return partitions


def assign_replicas(
    brokers: Sequence[int], first: int, count: int, replication_factor: int, rng: random.Random
) -> list[tuple[int, ...]]:
    """Replicas for partitions ``first..first+count-1``, as Kafka places them without racks:
    the first replica round robin from a random start, the others after it with a random
    shift that moves each time every broker has led once, so leaders and followers both
    spread evenly. INVALID_REPLICATION_FACTOR if there are not enough brokers."""
    n = len(brokers)
    if replication_factor < 1 or replication_factor > n:
        raise TopicError(
            ec.INVALID_REPLICATION_FACTOR,
            f"replication factor {replication_factor} is not between 1 and the {n} brokers available",
        )
    start, shift = rng.randrange(n), rng.randrange(n)
    out = []
    for i in range(first, first + count):
        if i > 0 and i % n == 0:
            shift += 1
        lead = (i + start) % n
        follow = [(lead + 1 + (shift + j) % (n - 1)) % n for j in range(replication_factor - 1)]
        out.append(tuple(brokers[b] for b in [lead, *follow]))
    return out


@dataclasses.dataclass(frozen=True)
class Election:
    """The outcome of a leader election for one partition: what it should become (None:
    left as it is) and the code and message its ElectLeaders result carries."""

    code: int
    new: PartitionMetadata | None = None
    message: str | None = None


def elect_after_loss(p: PartitionMetadata, live: Collection[int]) -> PartitionMetadata | None:
    """What the controller makes of a partition given the live brokers, or None to leave it:
    a live leader keeps its epoch and loses its gone followers from the ISR; a gone leader
    is replaced by the first live ISR member in replica order (the next epoch), or, with none
    alive, the partition goes offline (leader -1, the next epoch, the ISR kept so that its
    members, and only they, can lead it again)."""
    isr_live = tuple(r for r in p.isr if r in live)
    if p.leader in live:
        return None if isr_live == p.isr or not isr_live else dataclasses.replace(p, isr=isr_live)
    candidates = [r for r in p.replicas if r in isr_live]
    if candidates:
        return dataclasses.replace(p, leader=candidates[0], leader_epoch=p.leader_epoch + 1, isr=isr_live)
    if p.leader != NO_LEADER:
        return dataclasses.replace(p, leader=NO_LEADER, leader_epoch=p.leader_epoch + 1)
    return None


def elect_preferred(p: PartitionMetadata, live: Collection[int]) -> Election:
    """Preferred-leader election: the first replica leads if it is alive and in sync
    (the next epoch); ELECTION_NOT_NEEDED if it already leads, else
    PREFERRED_LEADER_NOT_AVAILABLE."""
    preferred = p.replicas[0]
    if p.leader == preferred:
        return Election(ec.ELECTION_NOT_NEEDED, message=f"broker {preferred} already leads")
    if preferred not in live or preferred not in p.isr:
        why = "is not alive" if preferred not in live else "is not in sync"
        return Election(ec.PREFERRED_LEADER_NOT_AVAILABLE, message=f"preferred replica {preferred} {why}")
    return Election(ec.NONE, dataclasses.replace(p, leader=preferred, leader_epoch=p.leader_epoch + 1))


def elect_unclean(p: PartitionMetadata, live: Collection[int]) -> Election:
    """Unclean election, asked for by an administrator: a partition without a live leader
    gets its first live ISR member, else its first live replica (which may lack acknowledged
    records: the ISR becomes that replica alone); ELECTION_NOT_NEEDED if its leader is alive,
    ELIGIBLE_LEADERS_NOT_AVAILABLE if no replica is."""
    if p.leader in live:
        return Election(ec.ELECTION_NOT_NEEDED, message=f"broker {p.leader} leads")
    clean = elect_after_loss(p, live)
    if clean is not None and clean.leader != NO_LEADER:
        return Election(ec.NONE, clean)
    anyone = [r for r in p.replicas if r in live]
    if not anyone:
        return Election(ec.ELIGIBLE_LEADERS_NOT_AVAILABLE, message="no replica is alive")
    leader = anyone[0]
    log.warning(
        "unclean election: broker %d leads, though not in the ISR %s: acknowledged records may be lost",
        leader,
        list(p.isr),
    )
    return Election(
        ec.NONE, dataclasses.replace(p, leader=leader, leader_epoch=p.leader_epoch + 1, isr=(leader,))
    )


def check_assignments(
    assignments: Sequence[Sequence[int]], brokers: Collection[int]
) -> list[tuple[int, ...]]:
    """Explicit replica assignments (CreateTopics, CreatePartitions): each names distinct
    registered brokers, all of one length; INVALID_REPLICA_ASSIGNMENT otherwise."""
    out = [tuple(a) for a in assignments]
    for i, replicas in enumerate(out):
        if not replicas or len(set(replicas)) != len(replicas):
            raise TopicError(
                ec.INVALID_REPLICA_ASSIGNMENT, f"partition {i}: replicas {list(replicas)} are not distinct"
            )
        unknown = [b for b in replicas if b not in brokers]
        if unknown:
            raise TopicError(
                ec.INVALID_REPLICA_ASSIGNMENT, f"partition {i}: brokers {unknown} are not registered"
            )
        if len(replicas) != len(out[0]):
            raise TopicError(
                ec.INVALID_REPLICA_ASSIGNMENT, f"partition {i}: {len(replicas)} replicas, not {len(out[0])}"
            )
    return out


class Controller(Protocol):
    """What may change the cluster's metadata; each method publishes the resulting image
    before it returns (so the change is visible to the next request)."""

    @property
    def image(self) -> MetadataImage: ...

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
        internal: bool = False,
        assignments: Sequence[Sequence[int]] | None = None,
    ) -> TopicMetadata:
        """``partitions`` and ``replication_factor`` -1: the broker's defaults (or, with
        ``assignments``, the replicas of each partition as given)."""
        ...

    async def delete_topic(self, name: str) -> TopicMetadata: ...

    async def create_partitions(
        self,
        name: str,
        count: int,
        *,
        validate_only: bool = False,
        assignments: Sequence[Sequence[int]] | None = None,
    ) -> None: ...

    async def alter_isr(self, name: str, index: int, leader_epoch: int, isr: tuple[int, ...]) -> bool:
        """A leader's change of its partition's ISR, made only if this broker still leads it
        in ``leader_epoch`` and nobody changed the partition since; returns whether it was
        made (and is in this broker's image)."""
        ...

    async def alter_topic_configs(
        self, name: str, changes: Mapping[str, str | None], *, validate_only: bool = False
    ) -> None: ...

    async def elect_leaders(
        self, preferred: bool, partitions: Sequence[tuple[str, int]] | None
    ) -> dict[tuple[str, int], Election]:
        """ElectLeaders: a preferred (else unclean) election for each of ``partitions``
        (None: every partition), each result once this broker's image shows it."""
        ...

    async def next_producer_id(self) -> int: ...

    #: Leaders moved by this broker as controller (a single broker never moves one).
    elections: int

    async def alter_scram_credentials(self, changes: Mapping[str, CredentialChanges]) -> None:
        """Sets (or, given None, removes) each user's credential for each mechanism named."""
        ...

    async def alter_acls(self, added: Collection[AclBinding], removed: Collection[AclBinding]) -> None:
        """Adds and removes these ACLs (adding one that exists, or removing one that does
        not, changes nothing)."""
        ...

    async def alter_client_quotas(self, changes: Mapping[Entity, Mapping[str, float | None]]) -> None:
        """Sets (a value) or removes (None) each entity's quotas."""
        ...


async def create_or_get(
    controller: Controller,
    image: Callable[[], MetadataImage],
    name: str,
    partitions: int,
    configs: Mapping[str, str],
    *,
    internal: bool = False,
    replication_factor: int = -1,
) -> TopicMetadata:
    """Creates a topic wanted on first use (auto-creation, ``__consumer_offsets``), or the
    topic another request or broker made meanwhile, once this broker's image shows it.
    TopicError otherwise (a name being deleted stays TOPIC_ALREADY_EXISTS)."""
    try:
        return await controller.create_topic(name, partitions, replication_factor, configs, internal=internal)
    except TopicError as e:
        made = image().topic(name)
        if e.code == ec.TOPIC_ALREADY_EXISTS and made is not None:
            return made
        raise


class LocalController:
    """The controller of a single broker, persisting to its data directory."""

    def __init__(self, config: BrokerConfig, replicas: ReplicaManager) -> None:
        self.config = config
        self.replicas = replicas
        self.meta_dir = os.path.join(config.data_dir, "meta")
        self.topics_dir = os.path.join(self.meta_dir, "topics")
        self.users_dir = os.path.join(self.meta_dir, "users")
        self._image = MetadataImage()
        self._creating: set[str] = set()  # names being created
        self._deleting: set[str] = set()  # names being deleted
        self._admin_lock = trio.Lock()  # one partition-count or config change at a time
        self._reserved = 0  # partitions being created, counted against the limit
        self._next_producer_id = 0
        self._producer_id_limit = 0
        self._producer_id_lock = trio.Lock()
        self.elections = 0

    @property
    def image(self) -> MetadataImage:
        return self._image

    # ---- loading ----

    def load(self, endpoints: list[Endpoint]) -> MetadataImage:
        """Reads (or, on a fresh directory, writes) the cluster id, the producer-id
        reservation and every topic (blocking I/O); returns the first image, with this broker,
        advertised at ``endpoints``, as the only broker and the controller."""
        os.makedirs(self.topics_dir, exist_ok=True)
        os.makedirs(self.users_dir, exist_ok=True)
        props = os.path.join(self.meta_dir, "meta.properties")
        if os.path.exists(props):
            with open(props) as f:
                values = dict(line.split("=", 1) for line in f.read().split() if "=" in line)
            cluster_id = values["cluster.id"]
        else:
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            text = f"cluster.id={cluster_id}\nnode.id={self.config.node_id}\nversion=1\n"
            write_file_atomic(self.meta_dir, "meta.properties", text.encode())
        ids = os.path.join(self.meta_dir, "producer-ids")
        self._next_producer_id = 0
        if os.path.exists(ids):
            with open(ids) as f:
                self._next_producer_id = int(f.read())
        self._producer_id_limit = self._next_producer_id
        topics = []
        for name in sorted(os.listdir(self.topics_dir)):
            if not name.endswith(".json"):
                continue
            with open(os.path.join(self.topics_dir, name)) as f:
                doc = json.load(f)
            topics.append(
                TopicMetadata(
                    doc["name"],
                    uuid.UUID(doc["id"]),
                    tuple(single_replica(i, self.config.node_id) for i in range(int(doc["partitions"]))),
                    MappingProxyType(dict(doc.get("configs", {}))),
                    internal=doc.get("internal", False),
                )
            )
        users = {}
        for name in sorted(os.listdir(self.users_dir)):
            if name.endswith(".json"):
                with open(os.path.join(self.users_dir, name)) as f:
                    users[urllib.parse.unquote(name[:-5])] = credentials_from_doc(json.load(f))
        acls = [AclBinding.from_doc(d) for d in self._read_meta("acls.json", [])]
        quotas = {entity_from_key(k): dict(v) for k, v in self._read_meta("quotas.json", {}).items()}
        me = BrokerMetadata(self.config.node_id, tuple(endpoints))
        image = MetadataImage(cluster_id=cluster_id).with_brokers([me], me.node_id).with_topics(topics)
        self._image = image.with_scram_credentials(users).with_acls(acls).with_client_quotas(quotas)
        return self._image

    def _read_meta(self, name: str, absent: Any) -> Any:
        """The JSON file ``name`` of ``meta/``, or ``absent`` if there is none."""
        try:
            with open(os.path.join(self.meta_dir, name)) as f:
                return json.load(f)
        except FileNotFoundError:
            return absent

    async def _persist_and_publish(self, image: MetadataImage, name: str, doc: Any) -> None:
        """Writes ``doc`` as the JSON file ``name`` of ``meta/`` (in a worker thread), then
        publishes ``image``."""
        data = json.dumps(doc, indent=1).encode()
        await trio.to_thread.run_sync(write_file_atomic, self.meta_dir, name, data)
        await self._publish(image)

    async def _publish(self, image: MetadataImage) -> None:
        self._image = image
        await self.replicas.apply(image)

    def _persist(self, topic: TopicMetadata) -> None:
        doc = {
            "name": topic.name,
            "id": str(topic.topic_id),
            "partitions": len(topic.partitions),
            "configs": dict(topic.configs),
            "internal": topic.internal,
        }
        write_file_atomic(self.topics_dir, f"{topic.name}.json", json.dumps(doc, indent=1).encode())

    # ---- topics ----

    def _check_limit(self, adding: int) -> None:
        """Refuses, before anything is created, partitions beyond ``tidelog.max.partitions``
        (by default what the descriptor limit allows): running out of descriptors half-way
        would leave a topic half made and starve new connections."""
        limit = self.config.partition_limit()
        hosted = sum(len(t.partitions) for t in self._image.topics.values()) + self._reserved
        if hosted + adding > limit:
            raise TopicError(
                ec.POLICY_VIOLATION,
                f"{adding} more partitions would make {hosted + adding}, above this broker's limit of "
                f"{limit} (tidelog.max.partitions; by default set by the open-files limit, ulimit -n)",
            )

    def _check_new(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        internal: bool,
        assignments: Sequence[Sequence[int]] | None,
    ) -> TopicMetadata:
        if name in self._image.topics or name in self._creating:
            raise TopicError(ec.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        if name in self._deleting:
            raise TopicError(ec.TOPIC_ALREADY_EXISTS, f"topic {name!r} is marked for deletion")
        me = self.config.node_id
        if assignments:
            partitions = len(check_assignments(assignments, (me,)))
        count = check_new_topic(self.config, name, partitions, configs)
        self._check_replication_factor(replication_factor)
        return TopicMetadata(
            name,
            uuid.uuid4(),
            tuple(single_replica(i, me) for i in range(count)),
            MappingProxyType(dict(configs)),
            internal=internal,
        )

    def _check_replication_factor(self, replication_factor: int) -> None:
        if replication_factor == -1:
            replication_factor = int(self.config.setting("default.replication.factor"))
        if replication_factor != 1:
            raise TopicError(
                ec.INVALID_REPLICATION_FACTOR,
                f"replication factor {replication_factor} is larger than the 1 broker available",
            )

    async def _create_logs_then_persist(self, topic: TopicMetadata, first: int) -> None:
        """Opens partitions ``first..`` of ``topic``, then writes its metadata; if the write
        fails, the new logs are removed again (all or nothing). A failure of the disk, or of
        the descriptor limit, becomes KAFKA_STORAGE_ERROR."""
        try:
            await self.replicas.create_logs(topic, first)
            try:
                await trio.to_thread.run_sync(self._persist, topic)
            except BaseException:
                await self.replicas.discard_logs(topic, first)
                raise
        except (TidelogError, OSError) as e:
            log.error("could not create partitions: %s", e)
            raise TopicError(ec.KAFKA_STORAGE_ERROR, f"could not create the partitions' logs: {e}") from e

    async def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        *,
        validate_only: bool = False,
        internal: bool = False,
        assignments: Sequence[Sequence[int]] | None = None,
    ) -> TopicMetadata:
        topic = self._check_new(name, partitions, replication_factor, configs, internal, assignments)
        self._check_limit(len(topic.partitions))
        if validate_only:
            return topic
        self._creating.add(name)
        self._reserved += len(topic.partitions)
        try:
            await self._create_logs_then_persist(topic, 0)
            log.info("created topic %s with %d partitions", name, len(topic.partitions))
            await self._publish(self._image.with_topics([topic]))
        finally:
            self._creating.discard(name)
            self._reserved -= len(topic.partitions)
        return topic

    async def create_partitions(
        self,
        name: str,
        count: int,
        *,
        validate_only: bool = False,
        assignments: Sequence[Sequence[int]] | None = None,
    ) -> None:
        topic = self._image.topic(name)
        if topic is None:
            raise TopicError(ec.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        if assignments:
            check_assignments(assignments, (self.config.node_id,))
        if count <= len(topic.partitions):
            raise TopicError(
                ec.INVALID_PARTITIONS,
                f"topic {name!r} has {len(topic.partitions)} partitions; {count} is not more",
            )
        self._check_limit(count - len(topic.partitions))
        if validate_only:
            return
        async with self._admin_lock:
            if self._image.topic(name) is not topic:
                raise TopicError(ec.INVALID_PARTITIONS, f"topic {name!r} changed while the request waited")
            added = count - len(topic.partitions)
            self._check_limit(added)
            grown = topic.with_partitions(count, self.config.node_id)
            self._reserved += added
            try:
                await self._create_logs_then_persist(grown, len(topic.partitions))
                await self._publish(self._image.with_topics([grown]))
            finally:
                self._reserved -= added

    async def alter_isr(self, name: str, index: int, leader_epoch: int, isr: tuple[int, ...]) -> bool:
        """A single broker's partitions have no followers: their ISR never changes."""
        return False

    async def elect_leaders(
        self, preferred: bool, partitions: Sequence[tuple[str, int]] | None
    ) -> dict[tuple[str, int], Election]:
        """A single broker leads each of its partitions, its only replica: no election is
        ever needed."""
        elect = elect_preferred if preferred else elect_unclean
        out = {}
        for name, index in self._image.partition_keys() if partitions is None else partitions:
            p = self._image.partition(name, index)
            out[(name, index)] = (
                Election(ec.UNKNOWN_TOPIC_OR_PARTITION, message=f"unknown partition {name}-{index}")
                if p is None
                else elect(p, {self.config.node_id})
            )
        return out

    async def alter_topic_configs(
        self, name: str, changes: Mapping[str, str | None], *, validate_only: bool = False
    ) -> None:
        """Validates and persists (in a worker thread) a topic's new configs; the replica
        manager applies them to its open logs in place."""
        topic = self._image.topic(name)
        if topic is None:
            raise TopicError(ec.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        merged = {k: v for k, v in {**topic.configs, **changes}.items() if v is not None}
        validate_configs(self.config, merged)
        if validate_only:
            return
        async with self._admin_lock:
            current = self._image.topic(name)
            if current is None or current.topic_id != topic.topic_id:
                raise TopicError(
                    ec.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} was deleted while the request waited"
                )
            changed = TopicMetadata(
                current.name, current.topic_id, current.partitions, MappingProxyType(merged), current.internal
            )
            await trio.to_thread.run_sync(self._persist, changed)
            await self._publish(self._image.with_topics([changed]))
        log.info("topic %s configs now %s", name, merged)

    async def delete_topic(self, name: str) -> TopicMetadata:
        """As Kafka: the topic's metadata file goes first, then the image without it is
        published, and the replica manager retires its partitions (appends in progress
        finish, later ones are refused) and moves their directories aside, which frees the
        name for a new topic with fresh directories. A crash in between leaves directories
        without a topic, moved aside if the name is used again."""
        async with self._admin_lock:
            topic = self._image.topic(name)
            if topic is None:
                raise TopicError(ec.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
            self._deleting.add(name)
            try:
                await trio.to_thread.run_sync(self._unpersist, name)
                await self._publish(self._image.with_topics(removed=[name]))
            finally:
                self._deleting.discard(name)
        log.info("deleted topic %s", name)
        return topic

    def _unpersist(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.topics_dir, f"{name}.json"))

    # ---- users ----

    async def alter_scram_credentials(self, changes: Mapping[str, CredentialChanges]) -> None:
        async with self._admin_lock:
            image = self._image
            users = {u: altered(image.scram_credentials.get(u, {}), c) for u, c in changes.items()}
            await trio.to_thread.run_sync(self._persist_users, users)
            await self._publish(self._image.with_scram_credentials(users))

    def _persist_users(self, users: Mapping[str, UserCredentials]) -> None:
        for user, creds in users.items():
            name = urllib.parse.quote(user, safe="") + ".json"
            if creds:
                write_file_atomic(self.users_dir, name, json.dumps(credentials_doc(creds)).encode())
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.users_dir, name))

    # ---- ACLs ----

    async def alter_acls(self, added: Collection[AclBinding], removed: Collection[AclBinding]) -> None:
        async with self._admin_lock:
            image = self._image.with_acls(added, removed)
            await self._persist_and_publish(image, "acls.json", [a.doc() for a in image.acls])

    async def alter_client_quotas(self, changes: Mapping[Entity, Mapping[str, float | None]]) -> None:
        async with self._admin_lock:
            image = self._image.with_client_quotas(changes)
            await self._persist_and_publish(image, "quotas.json", quota_docs(image.client_quotas))

    # ---- producer ids ----

    async def next_producer_id(self) -> int:
        """Producer ids survive restarts: blocks of ids are reserved on disk before use, one
        reservation at a time (concurrent InitProducerIds wait for it)."""
        async with self._producer_id_lock:
            if self._next_producer_id >= self._producer_id_limit:
                limit = self._next_producer_id + PRODUCER_ID_BLOCK
                await trio.to_thread.run_sync(
                    write_file_atomic, self.meta_dir, "producer-ids", str(limit).encode()
                )
                self._producer_id_limit = limit
            pid = self._next_producer_id
            self._next_producer_id += 1
            return pid
