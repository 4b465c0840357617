"""The cluster's metadata as one read-only, versioned image: the brokers and their endpoints,
the topics with their ids and configs, each partition's leader, leader epoch, replicas and
in-sync replicas, the controller, the users' SCRAM credentials, the ACLs and the client
quotas. The controller publishes a new image for every change; handlers read the image in
force, and the replica manager turns each new one into what this broker hosts. An image is
never changed: a change makes a new one that shares what did not change."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from tidelog.broker.authorizer import AclBinding
from tidelog.broker.config import Endpoint
from tidelog.broker.quotas import Entity
from tidelog.scram import UserCredentials

NO_LEADER = -1


@dataclasses.dataclass(frozen=True, slots=True)
class BrokerMetadata:
    """A broker as clients are told about it: its id, its advertised endpoints, its rack."""

    node_id: int
    endpoints: tuple[Endpoint, ...]
    rack: str | None = None

    def endpoint(self, listener: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.name == listener), None)


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionMetadata:
    index: int
    leader: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    topic_id: uuid.UUID
    partitions: tuple[PartitionMetadata, ...]
    configs: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    internal: bool = False

    def with_partitions(self, count: int, leader: int) -> TopicMetadata:
        """This topic grown to ``count`` partitions, the new ones on ``leader`` alone."""
        added = tuple(single_replica(i, leader) for i in range(len(self.partitions), count))
        return dataclasses.replace(self, partitions=self.partitions + added)


def single_replica(index: int, node_id: int) -> PartitionMetadata:
    """A partition whose one replica, ``node_id``, leads it (a single broker's partitions)."""
    return PartitionMetadata(index, node_id, 0, (node_id,), (node_id,))


@dataclasses.dataclass(frozen=True)
class MetadataImage:
    """What the cluster looks like at ``version`` (0: nothing loaded yet)."""

    version: int = 0
    cluster_id: str = ""
    controller_id: int = NO_LEADER
    brokers: Mapping[int, BrokerMetadata] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    topics: Mapping[str, TopicMetadata] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    topic_ids: Mapping[uuid.UUID, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    #: user -> their SCRAM credentials by mechanism (users without any are absent).
    scram_credentials: Mapping[str, UserCredentials] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )

    #: Every ACL, sorted (see ``authorizer``).
    acls: tuple[AclBinding, ...] = ()
    #: Client quotas: entity -> {quota key: value} (see ``quotas``).
    client_quotas: Mapping[Entity, Mapping[str, float]] = dataclasses.field(
        default_factory=lambda: MappingProxyType({})
    )

    def topic(self, name: str) -> TopicMetadata | None:
        return self.topics.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicMetadata | None:
        name = self.topic_ids.get(topic_id)
        return None if name is None else self.topics[name]

    def partition(self, name: str, index: int) -> PartitionMetadata | None:
        topic = self.topics.get(name)
        if topic is None or not 0 <= index < len(topic.partitions):
            return None
        return topic.partitions[index]

    def partition_keys(self) -> list[tuple[str, int]]:
        """Every partition as (topic, index)."""
        return [(t.name, p.index) for t in self.topics.values() for p in t.partitions]

    def with_topics(
        self, changed: Iterable[TopicMetadata] = (), removed: Iterable[str] = ()
    ) -> MetadataImage:
        """The next image: ``changed`` topics added or replaced, ``removed`` ones gone."""
        topics = dict(self.topics)
        ids = dict(self.topic_ids)
        for name in removed:
            gone = topics.pop(name)
            del ids[gone.topic_id]
        for t in changed:
            topics[t.name] = t
            ids[t.topic_id] = t.name
        return dataclasses.replace(
            self, version=self.version + 1, topics=MappingProxyType(topics), topic_ids=MappingProxyType(ids)
        )

    def with_scram_credentials(self, users: Mapping[str, UserCredentials]) -> MetadataImage:
        """The next image: each of ``users`` with exactly these credentials (none: removed)."""
        creds = dict(self.scram_credentials)
        for user, mine in users.items():
            if mine:
                creds[user] = MappingProxyType(dict(mine))
            else:
                creds.pop(user, None)
        return dataclasses.replace(self, version=self.version + 1, scram_credentials=MappingProxyType(creds))

    def with_acls(
        self, added: Iterable[AclBinding] = (), removed: Iterable[AclBinding] = ()
    ) -> MetadataImage:
        """The next image: ``added`` ACLs there (once each), ``removed`` ones gone."""
        acls = (set(self.acls) | set(added)) - set(removed)
        return dataclasses.replace(self, version=self.version + 1, acls=tuple(sorted(acls)))

    def with_client_quotas(self, changes: Mapping[Entity, Mapping[str, float | None]]) -> MetadataImage:
        """The next image: each entity's quotas set (a value) or removed (None)."""
        quotas = {e: dict(v) for e, v in self.client_quotas.items()}
        for entity, change in changes.items():
            values = quotas.setdefault(entity, {})
            for key, value in change.items():
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
            if not values:
                del quotas[entity]
        frozen = MappingProxyType({e: MappingProxyType(v) for e, v in quotas.items()})
        return dataclasses.replace(self, version=self.version + 1, client_quotas=frozen)

    def with_brokers(self, brokers: Iterable[BrokerMetadata], controller_id: int) -> MetadataImage:
        return dataclasses.replace(
            self,
            version=self.version + 1,
            brokers=MappingProxyType({b.node_id: b for b in brokers}),
            controller_id=controller_id,
        )


class DepartedBrokers:
    """Brokers that have just left the image, still listed in Metadata answers for ``grace``
    seconds. When a leader's broker goes, the controller moves its leaderships within
    milliseconds, so one Metadata answer both drops the broker and names the new leaders;
    librdkafka then decommissions the dropped broker while it migrates the partition to the
    new leader, the decommission wins, and the partition waits leaderless for the client's
    next metadata refresh (up to ``retry.backoff.max.ms``, a second). Listing the broker a
    little longer lets clients move to the new leaders first (the default,
    ``tidelog.metadata.departed.broker.ms`` = 2 s, is two of those refreshes). Its partitions
    still show it as offline: this is only the brokers list."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._left: dict[int, tuple[BrokerMetadata, float]] = {}

    def note(self, old: MetadataImage, new: MetadataImage, now: float) -> None:
        """Records the brokers in ``old`` that are not in ``new`` as leaving at ``now``."""
        for node_id, broker in old.brokers.items():
            if node_id not in new.brokers:
                self._left[node_id] = (broker, now)
        for node_id in [n for n, (_, at) in self._left.items() if n in new.brokers or now - at > self.grace]:
            del self._left[node_id]

    def listed(self, image: MetadataImage, now: float) -> list[BrokerMetadata]:
        """The brokers a Metadata answer lists: ``image``'s, and those that left it less than
        ``grace`` seconds ago, by node id."""
        recent = [b for b, at in self._left.values() if now - at <= self.grace]
        return sorted([*image.brokers.values(), *recent], key=lambda b: b.node_id)
