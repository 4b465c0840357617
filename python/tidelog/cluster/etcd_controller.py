"""The cluster's metadata in etcd, and the controller that changes it. Keys, under the
cluster's prefix (``/<cluster id>/``):

- ``cluster_id``: the id clients see, made once by the first broker;
- ``brokers/<id>``: a live broker's endpoints (held by its lease, see ``registration``);
- ``controller`` and ``controller_epoch`` (see ``election``);
- ``topics/<name>``: ``{"id", "partitions", "configs", "internal"}``;
- ``partitions/<name>/<index>``: ``{"leader", "leader_epoch", "replicas", "isr"}``;
- ``producer_ids``: the first id not yet handed out in blocks;
- ``users/<name>``: a user's SCRAM credentials by mechanism (salt, keys, iterations);
- ``quotas/<entity>``: an entity's client quotas (``quotas.entity_key``);
- ``acls/<key>``: one ACL (``AclBinding.doc``; the key is derived from it, so adding an ACL
  twice writes one key).

Every change is one etcd transaction conditional on what it read (a key absent, or a key's
revision unchanged), so two brokers changing the same thing cannot both succeed. Every
broker watches the prefix and builds its ``MetadataImage`` from it; a change made here
returns once this broker's own image shows it.

Replicas are placed over the live brokers as Kafka places them (``assign_replicas``), or as
a CreateTopics/CreatePartitions request assigns them; a partition's first replica leads it,
and all its replicas start in the ISR. A partition's leader changes its ISR (``alter_isr``)
by a transaction conditional on the key's revision, its own leadership and its epoch.

The controller in office (``serve_in_office``) watches the registrations: a partition whose
leader is gone gets the first live ISR member of its replicas as leader, with the next leader
epoch; gone followers leave the ISR at once (so acks=all need not wait out
``replica.lag.time.max.ms`` for them); with no ISR member alive the partition goes offline
(leader -1, its ISR kept) until one returns, unless the topic enables
``unclean.leader.election.enable``; it also gives leaderships back to preferred replicas
(``auto.leader.rebalance.enable``). Each change is
conditional on the partition key's revision and on the controller key still being this
term's, so a deposed controller changes nothing."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import trio

from tidelog.broker.authorizer import AclBinding
from tidelog.broker.config import BrokerConfig, Endpoint
from tidelog.broker.controller import (
    PRODUCER_ID_BLOCK,
    Election,
    TopicError,
    assign_replicas,
    check_assignments,
    check_new_topic,
    elect_after_loss,
    elect_preferred,
    elect_unclean,
    validate_configs,
)
from tidelog.broker.metadata import (
    NO_LEADER,
    BrokerMetadata,
    MetadataImage,
    PartitionMetadata,
    TopicMetadata,
)
from tidelog.broker.quotas import Entity, entity_from_key, entity_key
from tidelog.cluster.etcd import (
    Etcd,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    WatchCompacted,
    delete_op,
    key_absent,
    mod_revision_is,
    put_op,
)
from tidelog.error_codes import ErrorCode as ec
from tidelog.scram import CredentialChanges, UserCredentials, altered, credentials_doc, credentials_from_doc

log = logging.getLogger("tidelog.cluster")
#: How long a change waits for this broker's image to show it.
APPLY_TIMEOUT = 30.0
#: Operations per transaction (etcd refuses more than ``--max-txn-ops``, 128 by default).
ETCD_TXN_OPS = 100


class MetadataState:
    """The metadata keys as last read or watched, and the image they make."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.kvs: dict[bytes, KeyValue] = {}
        self.revision = 0

    def load(self, kvs: list[KeyValue], revision: int) -> None:
        self.kvs = {kv.key: kv for kv in kvs}
        self.revision = revision

    def image(self) -> MetadataImage:
        """The image these keys make. A key that is not ours or does not decode is logged
        and skipped: it never stops a broker from serving."""
        n = len(self.prefix)
        brokers: list[BrokerMetadata] = []
        topics: dict[str, tuple[uuid.UUID, int, dict[str, str], bool]] = {}
        partitions: dict[str, dict[int, PartitionMetadata]] = {}
        users: dict[str, UserCredentials] = {}
        acls: list[AclBinding] = []
        quotas: dict[Entity, dict[str, float | None]] = {}
        cluster_id, controller_id = "", NO_LEADER
        for key, kv in self.kvs.items():
            parts = key[n:].decode(errors="replace").split("/")
            try:
                if parts == ["cluster_id"]:
                    cluster_id = kv.value.decode()
                    continue
                doc = json.loads(kv.value)
                if parts == ["controller"]:
                    controller_id = int(doc["node_id"])
                elif parts[0] == "brokers" and len(parts) == 2:
                    endpoints = tuple(
                        Endpoint(e["name"], e["host"], int(e["port"]), e["security_protocol"])
                        for e in doc["endpoints"]
                    )
                    brokers.append(BrokerMetadata(int(doc["node_id"]), endpoints, doc.get("rack")))
                elif parts[0] == "topics" and len(parts) == 2:
                    configs = {str(k): str(v) for k, v in dict(doc.get("configs", {})).items()}
                    topics[parts[1]] = (
                        uuid.UUID(doc["id"]),
                        int(doc["partitions"]),
                        configs,
                        bool(doc.get("internal")),
                    )
                elif parts[0] == "partitions" and len(parts) == 3:
                    index = int(parts[2])
                    partitions.setdefault(parts[1], {})[index] = decode_partition(index, doc)
                elif parts[0] == "users" and len(parts) >= 2:
                    users["/".join(parts[1:])] = credentials_from_doc(doc)
                elif parts[0] == "acls" and len(parts) == 2:
                    acls.append(AclBinding.from_doc(doc))
                elif parts[0] == "quotas" and len(parts) >= 2:
                    quotas[entity_from_key("/".join(parts[1:]))] = {str(k): float(v) for k, v in doc.items()}
            except (ValueError, KeyError, TypeError) as e:
                log.warning("ignored undecodable metadata key %r: %r", key, e)
        built = []
        for name, (topic_id, count, configs, internal) in topics.items():
            found = partitions.get(name, {})
            # Partitions by index, up to the first one missing (a topic's keys are written in
            # one transaction, so none is, unless someone else wrote there).
            parts_meta: list[PartitionMetadata] = []
            for i in range(count):
                if i not in found:
                    break
                parts_meta.append(found[i])
            built.append(
                TopicMetadata(name, topic_id, tuple(parts_meta), MappingProxyType(configs), internal)
            )
        image = MetadataImage(cluster_id=cluster_id)
        image = image.with_brokers(sorted(brokers, key=lambda b: b.node_id), controller_id).with_topics(built)
        image = image.with_scram_credentials(users).with_acls(acls).with_client_quotas(quotas)
        return dataclasses.replace(image, version=self.revision)  # the etcd revision it shows

    def live_brokers(self) -> set[int]:
        """The ids of the brokers registered in these keys."""
        brokers = self.prefix + b"brokers/"
        return {int(key[len(brokers) :]) for key in self.kvs if key.startswith(brokers)}


def decode_partition(index: int, doc: Mapping[str, Any]) -> PartitionMetadata:
    """A partition's key as read (``partition_doc`` writes it)."""
    return PartitionMetadata(
        index,
        int(doc["leader"]),
        int(doc["leader_epoch"]),
        tuple(int(r) for r in doc["replicas"]),
        tuple(int(r) for r in doc["isr"]),
    )


def partition_doc(p: PartitionMetadata) -> bytes:
    """A partition's key as stored."""
    return json.dumps(
        {"leader": p.leader, "leader_epoch": p.leader_epoch, "replicas": list(p.replicas), "isr": list(p.isr)}
    ).encode()


@contextlib.contextmanager
def etcd_errors(what: str) -> Iterator[None]:
    """An etcd that cannot be reached makes a metadata change REQUEST_TIMED_OUT (retriable),
    as a Kafka controller that does not answer in time."""
    try:
        yield
    except EtcdError as e:
        raise TopicError(ec.REQUEST_TIMED_OUT, f"{what}: etcd did not answer ({e})") from e


class EtcdController:
    """The ``Controller`` of a broker in an etcd-coordinated cluster, and the watch that
    keeps its image current (``run`` in a nursery after ``load``)."""

    def __init__(
        self,
        config: BrokerConfig,
        etcd: Etcd,
        prefix: bytes,
        on_image: Callable[[MetadataImage], Awaitable[None]],
    ) -> None:
        self.config = config
        self.etcd = etcd
        self.prefix = prefix
        self.state = MetadataState(prefix)
        #: Leaders this broker moved as controller (the leader-election metric).
        self.elections = 0
        self._image = MetadataImage()
        self._on_image = on_image
        self._changed = trio.Event()  # set whenever a new image is installed
        self._next_producer_id = 0
        self._producer_id_limit = 0
        self._producer_id_lock = trio.Lock()

    @property
    def image(self) -> MetadataImage:
        return self._image

    # ---- the image ----

    async def load(self) -> MetadataImage:
        """Makes the cluster id if this is the cluster's first broker, then reads the whole
        prefix; returns the first image."""
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        key = self.prefix + b"cluster_id"
        await self.etcd.txn([key_absent(key)], [put_op(key, cluster_id.encode())])
        kvs, revision = await self.etcd.range(self.prefix, prefix=True)
        self.state.load(kvs, revision)
        self._image = self.state.image()
        return self._image

    async def run(self) -> None:
        """Watches the prefix from the last revision read and publishes every change; a
        compacted or broken watch is resumed from a fresh read, so no change is missed."""
        while True:
            try:
                async for events in self.etcd.watch(
                    self.prefix, prefix=True, start_revision=self.state.revision + 1
                ):
                    for e in events:
                        if e.deleted:
                            self.state.kvs.pop(e.kv.key, None)
                        else:
                            self.state.kvs[e.kv.key] = e.kv
                        self.state.revision = max(self.state.revision, e.kv.mod_revision)
                    await self._install(self.state.image())
            except (WatchCompacted, EtcdError) as e:
                log.warning("metadata watch interrupted (%s): reading again", e)
                await trio.sleep(0.2)
                try:
                    kvs, revision = await self.etcd.range(self.prefix, prefix=True)
                except EtcdUnavailable as again:
                    log.warning("etcd unavailable: %s (serving the last image)", again)
                    continue
                self.state.load(kvs, revision)
                await self._install(self.state.image())

    async def _install(self, image: MetadataImage) -> None:
        # Applied first: a change is "seen" only once requests can find what it made.
        await self._on_image(image)
        self._image = image
        self._changed.set()
        self._changed = trio.Event()

    async def _until(self, shown: Callable[[MetadataImage], bool], what: str) -> None:
        """Waits until this broker's image shows a change just made."""
        with trio.move_on_after(APPLY_TIMEOUT):
            while not shown(self._image):
                await self._changed.wait()
            return
        raise TopicError(ec.REQUEST_TIMED_OUT, f"{what} was made but not yet seen by this broker")

    # ---- topics ----

    def _topic_key(self, name: str) -> bytes:
        return self.prefix + b"topics/" + name.encode()

    def _partition_key(self, name: str, index: int) -> bytes:
        return self.prefix + b"partitions/%s/%d" % (name.encode(), index)

    def _assign(
        self,
        first: int,
        count: int,
        replication_factor: int,
        assignments: Sequence[Sequence[int]] | None,
    ) -> list[tuple[int, ...]]:
        """Replicas for partitions ``first..first+count-1``: as assigned, else placed over the
        live brokers (``assign_replicas``)."""
        live = sorted(self._image.brokers)
        if assignments:
            return check_assignments(assignments, live)
        if not live:
            raise TopicError(ec.BROKER_NOT_AVAILABLE, "no live broker is registered")
        return assign_replicas(live, first, count, replication_factor, random.Random())

    @staticmethod
    def _partition_doc(replicas: tuple[int, ...]) -> bytes:
        return partition_doc(PartitionMetadata(0, replicas[0], 0, replicas, replicas))

    @staticmethod
    def _topic_doc(topic_id: uuid.UUID, partitions: int, configs: Mapping[str, str], internal: bool) -> bytes:
        return json.dumps(
            {"id": str(topic_id), "partitions": partitions, "configs": dict(configs), "internal": internal}
        ).encode()

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
        with etcd_errors("creating a topic"):
            if self._image.topic(name) is not None:
                raise TopicError(ec.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
            if assignments:
                partitions = len(assignments)
            count = check_new_topic(self.config, name, partitions, configs)
            if replication_factor == -1:
                replication_factor = int(self.config.setting("default.replication.factor"))
            placed = self._assign(0, count, replication_factor, assignments)
            topic_id = uuid.uuid4()
            if validate_only:
                return TopicMetadata(
                    name, topic_id, tuple(PartitionMetadata(i, r[0], 0, r, r) for i, r in enumerate(placed))
                )
            ops = [put_op(self._topic_key(name), self._topic_doc(topic_id, count, configs, internal))]
            ops += [
                put_op(self._partition_key(name, i), self._partition_doc(r)) for i, r in enumerate(placed)
            ]
            result = await self.etcd.txn([key_absent(self._topic_key(name))], ops)
            if not result.succeeded:
                # Made by another broker just now: once this broker sees it, the caller may use it.
                await self._until(lambda image: image.topic(name) is not None, f"topic {name!r}")
                raise TopicError(ec.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
            await self._until(lambda image: image.topic_by_id(topic_id) is not None, f"topic {name!r}")
            created = self._image.topic_by_id(topic_id)
            assert created is not None
            log.info("created topic %s with %d partitions (replicas %s)", name, count, placed)
            return created

    async def _read_topic(self, name: str) -> tuple[KeyValue, dict[str, Any]]:
        kv = await self.etcd.get(self._topic_key(name))
        if kv is None:
            raise TopicError(ec.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        return kv, json.loads(kv.value)

    async def delete_topic(self, name: str) -> TopicMetadata:
        with etcd_errors("deleting a topic"):
            kv, doc = await self._read_topic(name)
            ops = [delete_op(self._topic_key(name))]
            ops += [delete_op(self._partition_key(name, i)) for i in range(int(doc["partitions"]))]
            result = await self.etcd.txn([mod_revision_is(kv.key, kv.mod_revision)], ops)
            if not result.succeeded:
                raise TopicError(ec.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} changed while being deleted")
            topic_id = uuid.UUID(doc["id"])
            gone = self._image.topic_by_id(topic_id)
            await self._until(lambda image: image.topic_by_id(topic_id) is None, f"the deletion of {name!r}")
            log.info("deleted topic %s", name)
            return gone or TopicMetadata(name, topic_id, ())

    async def create_partitions(
        self,
        name: str,
        count: int,
        *,
        validate_only: bool = False,
        assignments: Sequence[Sequence[int]] | None = None,
    ) -> None:
        with etcd_errors("adding partitions"):
            kv, doc = await self._read_topic(name)
            have = int(doc["partitions"])
            if count <= have:
                raise TopicError(
                    ec.INVALID_PARTITIONS, f"topic {name!r} has {have} partitions; {count} is not more"
                )
            if assignments and len(assignments) != count - have:
                raise TopicError(
                    ec.INVALID_REPLICA_ASSIGNMENT,
                    f"{len(assignments)} assignments for {count - have} new partitions",
                )
            topic = self._image.topic(name)
            rf = len(topic.partitions[0].replicas) if topic is not None and topic.partitions else 1
            placed = self._assign(have, count - have, rf, assignments)
            if validate_only:
                return
            doc["partitions"] = count
            ops = [put_op(kv.key, json.dumps(doc).encode())]
            ops += [
                put_op(self._partition_key(name, have + i), self._partition_doc(r))
                for i, r in enumerate(placed)
            ]
            result = await self.etcd.txn([mod_revision_is(kv.key, kv.mod_revision)], ops)
            if not result.succeeded:
                raise TopicError(ec.INVALID_PARTITIONS, f"topic {name!r} changed while the request waited")

            def grown(image: MetadataImage) -> bool:
                t = image.topic(name)
                return t is not None and len(t.partitions) >= count

            await self._until(grown, f"the new partitions of {name!r}")

    async def alter_topic_configs(
        self, name: str, changes: Mapping[str, str | None], *, validate_only: bool = False
    ) -> None:
        with etcd_errors("altering configs"):
            kv, doc = await self._read_topic(name)
            merged = {k: v for k, v in {**doc.get("configs", {}), **changes}.items() if v is not None}
            validate_configs(self.config, merged)
            if validate_only:
                return
            doc["configs"] = merged
            result = await self.etcd.txn(
                [mod_revision_is(kv.key, kv.mod_revision)], [put_op(kv.key, json.dumps(doc).encode())]
            )
            if not result.succeeded:
                raise TopicError(
                    ec.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} changed while the request waited"
                )

            def shown(image: MetadataImage) -> bool:
                t = image.topic(name)
                return t is not None and dict(t.configs) == merged

            await self._until(shown, f"the configs of {name!r}")

    # ---- partition state ----

    async def alter_isr(self, name: str, index: int, leader_epoch: int, isr: tuple[int, ...]) -> bool:
        me = self.config.node_id
        key = self._partition_key(name, index)
        try:
            kv = await self.etcd.get(key)
            if kv is None:
                return False
            doc = json.loads(kv.value)
            if doc["leader"] != me or doc["leader_epoch"] != leader_epoch:
                return False
            doc["isr"] = list(isr)
            result = await self.etcd.txn(
                [mod_revision_is(key, kv.mod_revision)], [put_op(key, json.dumps(doc).encode())]
            )
        except EtcdError as e:
            log.warning("ISR of %s-%d not changed to %s: etcd did not answer (%s)", name, index, list(isr), e)
            return False
        if not result.succeeded:
            return False
        log.info("ISR of %s-%d is now %s (leader epoch %d)", name, index, list(isr), leader_epoch)

        def shown(image: MetadataImage) -> bool:
            p = image.partition(name, index)
            return p is None or p.isr == isr or p.leader_epoch != leader_epoch

        try:
            await self._until(shown, f"the ISR of {name}-{index}")
        except TopicError:
            log.warning("ISR of %s-%d changed in etcd but not yet seen here", name, index)
        return True

    def _partitions_watched(self) -> Iterator[tuple[KeyValue, PartitionMetadata]]:
        """Each partition key as last watched, decoded (those that do not decode were logged
        when the image was built)."""
        for key, kv in list(self.state.kvs.items()):
            if key.startswith(self.prefix + b"partitions/"):
                try:
                    yield kv, decode_partition(int(key.rsplit(b"/", 1)[1]), json.loads(kv.value))
                except (ValueError, KeyError, TypeError):
                    continue

    def _topic_of(self, partition_key: bytes) -> str:
        """The topic name in a ``partitions/<name>/<index>`` key."""
        return partition_key[len(self.prefix) + len(b"partitions/") :].rsplit(b"/", 1)[0].decode()

    async def _change_partition(
        self, kv: KeyValue, old: PartitionMetadata, new: PartitionMetadata, guards: list[Any], why: str
    ) -> bool:
        """Writes ``new`` over the partition key ``kv`` if nobody changed it since (and the
        ``guards`` hold); returns whether it was made."""
        result = await self.etcd.txn(
            [mod_revision_is(kv.key, kv.mod_revision), *guards], [put_op(kv.key, partition_doc(new))]
        )
        if result.succeeded:
            self.elections += new.leader != old.leader
            log.info(
                "partition %s: leader %d, epoch %d, ISR %s (was leader %d, ISR %s): %s",
                kv.key[len(self.prefix) + len(b"partitions/") :].decode(errors="replace"),
                new.leader,
                new.leader_epoch,
                list(new.isr),
                old.leader,
                list(old.isr),
                why,
            )
        return bool(result.succeeded)

    async def serve_in_office(self, controller_key: bytes) -> None:
        """The controller's work while this broker holds ``controller_key``: on every watched
        change (and every second, to retry what failed), elects leaders and shrinks ISRs as
        ``elect_after_loss`` says, and every ``leader.imbalance.check.interval.seconds``
        (with ``auto.leader.rebalance.enable``) gives leaderships back to preferred replicas.
        Each decision is made from the partition's key as last watched and is conditional on
        that key's revision, never from an image that may be older than it. Returns if the
        key is no longer this broker's."""
        me = self.config.node_id
        rebalance = self.config.setting("auto.leader.rebalance.enable").lower() == "true"
        interval = int(self.config.setting("leader.imbalance.check.interval.seconds"))
        next_rebalance = trio.current_time() + interval
        known = self.state.live_brokers()
        while True:
            held = await self.etcd.get(controller_key)
            if held is None or int(json.loads(held.value)["node_id"]) != me:
                return
            guard = mod_revision_is(controller_key, held.mod_revision)
            changed = self._changed
            live = self.state.live_brokers()
            if gone := known - live:
                log.info("controller: broker(s) %s gone (registration lapsed or removed)", sorted(gone))
            known = live
            for kv, p in self._partitions_watched():
                live = self.state.live_brokers()
                new = elect_after_loss(p, live)
                if (new is None and p.leader == NO_LEADER) or (new is not None and new.leader == NO_LEADER):
                    # No in-sync replica is alive: an out-of-sync one only if the topic allows it.
                    topic = self._image.topic(self._topic_of(kv.key))
                    if topic is not None and self.config.topic_setting(
                        topic.configs, "unclean.leader.election.enable"
                    ):
                        new = elect_unclean(p, live).new or new
                if new is not None:
                    await self._change_partition(kv, p, new, [guard], f"live brokers {sorted(live)}")
            if rebalance and trio.current_time() >= next_rebalance:
                await self._rebalance_leaders(guard)
                next_rebalance = trio.current_time() + interval
            with trio.move_on_after(1.0):
                await changed.wait()

    async def _rebalance_leaders(self, guard: Any) -> None:
        """Kafka's auto leader rebalance: a broker that is the preferred replica of more
        partitions than it leads, by more than ``leader.imbalance.per.broker.percentage``,
        is given back those where it is alive and in sync."""
        threshold = int(self.config.setting("leader.imbalance.per.broker.percentage")) / 100
        watched = list(self._partitions_watched())
        preferred: dict[int, int] = {}
        lost: dict[int, list[tuple[KeyValue, PartitionMetadata]]] = {}
        for kv, p in watched:
            preferred[p.replicas[0]] = preferred.get(p.replicas[0], 0) + 1
            if p.leader != p.replicas[0]:
                lost.setdefault(p.replicas[0], []).append((kv, p))
        for broker, parts in lost.items():
            if len(parts) / preferred[broker] <= threshold:
                continue
            for kv, p in parts:
                election = elect_preferred(p, self.state.live_brokers())
                if election.new is not None:
                    await self._change_partition(kv, p, election.new, [guard], "preferred leader")

    async def _until_epoch(self, name: str, index: int, epoch: int) -> None:
        """Waits until this broker's image shows the partition in ``epoch`` (or gone)."""

        def shown(image: MetadataImage) -> bool:
            q = image.partition(name, index)
            return q is None or q.leader_epoch >= epoch

        await self._until(shown, f"the election of {name}-{index}")

    async def elect_leaders(
        self, preferred: bool, partitions: Sequence[tuple[str, int]] | None
    ) -> dict[tuple[str, int], Election]:
        elect = elect_preferred if preferred else elect_unclean
        out: dict[tuple[str, int], Election] = {}
        with etcd_errors("electing leaders"):
            for name, index in self._image.partition_keys() if partitions is None else partitions:
                key = self._partition_key(name, index)
                for _ in range(3):  # retried when an ISR change got there first
                    kv = await self.etcd.get(key)
                    if kv is None:
                        out[(name, index)] = Election(
                            ec.UNKNOWN_TOPIC_OR_PARTITION, message=f"unknown partition {name}-{index}"
                        )
                        break
                    p = decode_partition(index, json.loads(kv.value))
                    election = out[(name, index)] = elect(p, set(self._image.brokers))
                    if election.new is None:
                        break
                    if await self._change_partition(kv, p, election.new, [], "ElectLeaders"):
                        await self._until_epoch(name, index, election.new.leader_epoch)
                        break
                else:
                    out[(name, index)] = Election(
                        ec.REQUEST_TIMED_OUT, message=f"{name}-{index} kept changing during its election"
                    )
        return out

    async def _swap(self, key: bytes, update: Callable[[Any], Any]) -> Any:
        """Writes ``update(the key's JSON value, None if absent)`` over ``key`` (deleting it
        when that is empty) if nobody changed the key since it was read, reading again until
        the write lands; returns what was written."""
        while True:
            kv = await self.etcd.get(key)
            new = update(json.loads(kv.value) if kv else None)
            guard = mod_revision_is(key, kv.mod_revision) if kv else key_absent(key)
            op = put_op(key, json.dumps(new).encode()) if new else delete_op(key)
            if (await self.etcd.txn([guard], [op])).succeeded:
                return new

    # ---- users ----

    async def alter_scram_credentials(self, changes: Mapping[str, CredentialChanges]) -> None:
        with etcd_errors("altering SCRAM credentials"):
            for user, change in changes.items():

                def updated(doc: Any, change: CredentialChanges = change) -> dict[str, Any]:
                    return credentials_doc(altered(credentials_from_doc(doc or {}), change))

                creds = credentials_from_doc(
                    await self._swap(self.prefix + b"users/" + user.encode(), updated) or {}
                )

                def shown(image: MetadataImage, user: str = user, creds: UserCredentials = creds) -> bool:
                    return dict(image.scram_credentials.get(user, {})) == creds

                await self._until(shown, f"the SCRAM credentials of {user!r}")

    # ---- ACLs ----

    async def alter_acls(self, added: Collection[AclBinding], removed: Collection[AclBinding]) -> None:
        ops = [put_op(self.prefix + b"acls/" + a.key.encode(), json.dumps(a.doc()).encode()) for a in added]
        ops += [delete_op(self.prefix + b"acls/" + a.key.encode()) for a in removed]
        with etcd_errors("altering ACLs"):
            for i in range(0, len(ops), ETCD_TXN_OPS):
                await self.etcd.txn([], ops[i : i + ETCD_TXN_OPS])

            def shown(image: MetadataImage) -> bool:
                have = set(image.acls)
                return have.issuperset(added) and not have.intersection(removed)

            await self._until(shown, "the ACLs")

    async def alter_client_quotas(self, changes: Mapping[Entity, Mapping[str, float | None]]) -> None:
        with etcd_errors("altering client quotas"):
            for entity, change in changes.items():

                def merged(doc: Any, change: Mapping[str, float | None] = change) -> dict[str, float]:
                    values = {**{k: float(v) for k, v in (doc or {}).items()}, **change}
                    return {k: v for k, v in values.items() if v is not None}

                values = (
                    await self._swap(self.prefix + b"quotas/" + entity_key(entity).encode(), merged) or {}
                )

                def shown(
                    image: MetadataImage, entity: Entity = entity, values: dict[str, Any] = values
                ) -> bool:
                    return dict(image.client_quotas.get(entity, {})) == values

                await self._until(shown, f"the quotas of {entity_key(entity)}")

    # ---- producer ids ----

    async def next_producer_id(self) -> int:
        """Producer ids unique across the cluster: blocks reserved from the etcd counter
        ``producer_ids`` by compare-and-swap, one reservation at a time here."""
        with etcd_errors("allocating producer ids"):
            async with self._producer_id_lock:
                if self._next_producer_id >= self._producer_id_limit:
                    limit = int(
                        await self._swap(
                            self.prefix + b"producer_ids", lambda n: (n or 0) + PRODUCER_ID_BLOCK
                        )
                    )
                    self._next_producer_id, self._producer_id_limit = limit - PRODUCER_ID_BLOCK, limit
                pid = self._next_producer_id
                self._next_producer_id += 1
                return pid
