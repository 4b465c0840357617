"""Controller election in etcd, as Kafka's brokers raced for ZooKeeper's ``/controller``: one
transaction creates ``<prefix>controller`` only if it is absent, under the candidate's broker
lease, and raises ``<prefix>controller_epoch`` in the same step, so two brokers can never
both win and every term has a higher epoch than the last. When the controller's lease ends
(its broker died or stopped), the key vanishes and the others race again."""

from __future__ import annotations

import dataclasses
import json
import logging

from tidelog.cluster.etcd import Etcd, KeyValue, key_absent, mod_revision_is, put_op, range_op

log = logging.getLogger("tidelog.cluster")


@dataclasses.dataclass(frozen=True, slots=True)
class ControllerTerm:
    node_id: int
    epoch: int


class ControllerElection:
    """One broker's candidacy: ``campaign()`` until it wins or sees another controller;
    ``wait_for_vacancy()`` until the current controller goes."""

    def __init__(self, etcd: Etcd, prefix: bytes, node_id: int) -> None:
        self.etcd = etcd
        self.key = prefix + b"controller"
        self.epoch_key = prefix + b"controller_epoch"
        self.node_id = node_id

    @staticmethod
    def _term(kv: KeyValue) -> ControllerTerm:
        doc = json.loads(kv.value)
        return ControllerTerm(int(doc["node_id"]), int(doc["epoch"]))

    async def current(self) -> tuple[ControllerTerm | None, int]:
        """The controller in office (None if none) and the revision of that read."""
        kvs, revision = await self.etcd.range(self.key)
        return (self._term(kvs[0]) if kvs else None), revision

    async def campaign(self, lease: int) -> ControllerTerm:
        """Tries once to become the controller, under ``lease``; returns the term in force
        afterwards (this broker's if it won)."""
        while True:
            epoch_kv = await self.etcd.get(self.epoch_key)
            epoch = int(epoch_kv.value) + 1 if epoch_kv else 1
            guard = (
                mod_revision_is(self.epoch_key, epoch_kv.mod_revision)
                if epoch_kv
                else key_absent(self.epoch_key)
            )
            term = ControllerTerm(self.node_id, epoch)
            doc = json.dumps({"node_id": self.node_id, "epoch": epoch}).encode()
            result = await self.etcd.txn(
                [key_absent(self.key), guard],
                [put_op(self.key, doc, lease), put_op(self.epoch_key, str(epoch).encode())],
                [range_op(self.key)],
            )
            if result.succeeded:
                log.info("broker %d is the controller (epoch %d)", self.node_id, epoch)
                return term
            held = result.ranged(0)
            if held:
                return self._term(held[0])
            # The office was free but the epoch moved (another term began and ended): again.

    async def wait_for_vacancy(self, revision: int) -> None:
        """Returns once the controller key is deleted after ``revision`` (its lease ended,
        or it resigned)."""
        async for events in self.etcd.watch(self.key, start_revision=revision + 1):
            if any(e.deleted for e in events):
                return
