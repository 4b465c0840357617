"""A broker's registration in etcd: the key ``<prefix>brokers/<node id>`` with its endpoints,
held by a lease of ``broker.session.timeout.ms`` and kept alive, as a Kafka broker kept its
ephemeral znode in ZooKeeper. The key is created only if absent, so a second broker with a
live ``node.id`` is refused.

A broker whose lease may have lapsed is *fenced*: it must act as a leader no more (the
controller may already have moved its partitions) until etcd has confirmed its lease or it
has registered again. It knows the lease may have lapsed when etcd says so, or when its own
renewal loop did not run for a session (the process was paused or starved: on waking it
refuses writes before it answers anything). An etcd that is merely unreachable does not
fence it, as a ZooKeeper outage did not end Kafka sessions: etcd expires no lease while it
is down, and a broker cut off from an etcd that others still reach loses its partitions'
followers to the new leader, so acks=all writes cannot complete there."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from tidelog.broker.config import Endpoint
from tidelog.cluster.etcd import Etcd, EtcdError, key_absent, put_op, range_op

log = logging.getLogger("tidelog.cluster")
GRPC_NOT_FOUND = 5


def broker_doc(node_id: int, endpoints: Sequence[Endpoint], rack: str | None = None) -> bytes:
    """A broker's registration: its id, rack and advertised endpoints."""
    return json.dumps(
        {
            "node_id": node_id,
            "rack": rack,
            "endpoints": [
                {"name": e.name, "host": e.host, "port": e.port, "security_protocol": e.security_protocol}
                for e in endpoints
            ],
        }
    ).encode()


class NodeIdInUse(Exception):
    """Another live broker is registered with this ``node.id``."""

    def __init__(self, node_id: int, holder: dict[str, Any]) -> None:
        super().__init__(
            f"node.id {node_id} is registered by a live broker ({holder.get('endpoints')}): "
            "give every broker its own node.id"
        )
        self.node_id = node_id


class Registration:
    """Registers a broker and keeps it registered (``run`` in a nursery, after ``register``)."""

    def __init__(
        self,
        etcd: Etcd,
        prefix: bytes,
        node_id: int,
        doc: bytes,
        session_timeout_ms: int,
        monotonic: Callable[[], float],
    ) -> None:
        self.etcd = etcd
        self.key = prefix + b"brokers/%d" % node_id
        self.node_id = node_id
        self.doc = doc
        self.session = session_timeout_ms / 1000
        self.ttl = max(1, round(self.session))
        self.monotonic = monotonic
        self.lease = 0
        self._lapsed = True  # no lease known to be live (not yet registered, or etcd said so)
        self._suspect = False  # the loop stalled for a session: unfenced by the next renewal
        self._awake_at = monotonic()  # when the renewal loop last ran
        #: When the last renewal (or registration) that etcd confirmed was sent.
        self.last_renewal = float("-inf")
        self.registered = trio.Event()  # set while registered; replaced when fenced

    @property
    def fenced(self) -> bool:
        """True while the lease may have lapsed (read at every produce: no etcd call)."""
        return self._lapsed or self._suspect or self.monotonic() - self._awake_at > self.session

    async def register(self) -> None:
        """Takes the key, under a new lease; raises NodeIdInUse if a live broker holds it."""
        sent = self.monotonic()
        lease = await self.etcd.grant(self.ttl)
        result = await self.etcd.txn(
            [key_absent(self.key)], [put_op(self.key, self.doc, lease)], [range_op(self.key)]
        )
        if not result.succeeded:
            await self.etcd.revoke(lease)
            held = result.ranged(0)
            raise NodeIdInUse(self.node_id, json.loads(held[0].value) if held else {})
        self.lease = lease
        self._lapsed = self._suspect = False
        self.last_renewal = sent
        self._awake_at = max(self._awake_at, sent)
        if not self.registered.is_set():
            self.registered.set()
        log.info("broker %d registered in etcd (lease %x, %ds)", self.node_id, lease, self.ttl)

    async def run(self) -> None:
        """Renews the lease every third of its TTL. A lapsed lease (etcd says it is gone) is
        replaced by registering again; an etcd that does not answer is tried again."""
        while True:
            await trio.sleep(self.ttl / 3)
            now = self.monotonic()
            if now - self._awake_at > self.session:
                log.warning(
                    "broker %d: renewals stalled for %.1fs: fenced until etcd confirms",
                    self.node_id,
                    now - self._awake_at,
                )
                self._suspect = True
            self._awake_at = now
            try:
                if await self.etcd.keepalive(self.lease) > 0:
                    self.last_renewal = now
                    self._suspect = False
                    continue
                log.warning("broker %d: its etcd lease lapsed (fenced); registering again", self.node_id)
                self._fence()
                await self.register()
            except NodeIdInUse as e:
                log.error("%s", e)
                self._fence()
            except EtcdError as e:
                log.warning("broker %d: could not renew its etcd lease: %s", self.node_id, e)
            finally:
                self._awake_at = max(self._awake_at, self.monotonic())

    def _fence(self) -> None:
        self._lapsed = True
        if self.registered.is_set():
            self.registered = trio.Event()

    async def deregister(self) -> None:
        """Removes the registration at once (a clean stop): the controller moves leaders
        now rather than after the session timeout."""
        if self.lease:
            lease, self.lease = self.lease, 0
            self._fence()
            try:
                await self.etcd.revoke(lease)
            except EtcdError as e:
                if e.code != GRPC_NOT_FOUND:  # already expired: nothing left to take back
                    raise
