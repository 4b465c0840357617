"""A broker's membership of an etcd-coordinated cluster: its etcd client, its registration
(and so its fencing), its candidacy for controller, and the controller through which it
changes the metadata and watches it. The broker starts it before serving and ends it when
it stops."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from tidelog.broker.clock import Clock
from tidelog.broker.config import BrokerConfig, Endpoint
from tidelog.broker.metadata import MetadataImage
from tidelog.cluster.election import ControllerElection
from tidelog.cluster.etcd import Etcd, EtcdError
from tidelog.cluster.etcd_controller import EtcdController
from tidelog.cluster.registration import Registration, broker_doc

log = logging.getLogger("tidelog.cluster")
#: How long a clean stop waits for etcd to take the registration back.
LEAVE_TIMEOUT = 5.0


class ClusterMember:
    def __init__(
        self, config: BrokerConfig, clock: Clock, on_image: Callable[[MetadataImage], Awaitable[None]]
    ) -> None:
        self.config = config
        self.clock = clock
        self.prefix = f"/{config.cluster_name}/".encode()
        timeout = max(1.0, config.broker_session_timeout_ms / 3000)
        self.etcd = Etcd(config.etcd_endpoints, timeout=timeout)
        self.controller = EtcdController(config, self.etcd, self.prefix, on_image)
        self.election = ControllerElection(self.etcd, self.prefix, config.node_id)
        self.registration: Registration | None = None

    @property
    def fenced(self) -> bool:
        """True while this broker may not act as a leader (its lease may have lapsed)."""
        return self.registration is None or self.registration.fenced

    async def join(self, advertised: Sequence[Endpoint]) -> MetadataImage:
        """Registers this broker (NodeIdInUse if its node.id is live elsewhere) and reads the
        metadata; returns the first image."""
        await self.etcd.__aenter__()
        try:
            self.registration = Registration(
                self.etcd,
                self.prefix,
                self.config.node_id,
                broker_doc(self.config.node_id, advertised),
                self.config.broker_session_timeout_ms,
                self.clock.monotonic,
            )
            await self.registration.register()
            return await self.controller.load()
        except BaseException:
            await self.etcd.__aexit__(None, None, None)
            raise

    async def run(self) -> None:
        """Keeps the registration alive, the image current and a controller in office."""
        async with trio.open_nursery() as nursery:
            assert self.registration is not None
            nursery.start_soon(self.registration.run)
            nursery.start_soon(self.controller.run)
            nursery.start_soon(self._campaign)

    async def _campaign(self) -> None:
        """Stands for controller whenever the office is vacant, while registered, and does
        the controller's work while in office."""
        assert self.registration is not None
        while True:
            await self.registration.registered.wait()
            try:
                term, revision = await self.election.current()
                if term is None:
                    await self.election.campaign(self.registration.lease)
                    term, revision = await self.election.current()
                if term is not None and term.node_id == self.config.node_id:
                    broken: EtcdError | None = None
                    async with trio.open_nursery() as office:
                        office.start_soon(self._in_office)
                        try:
                            await self.election.wait_for_vacancy(revision)
                        except EtcdError as e:
                            # Raised out of the nursery it would come wrapped in an
                            # ExceptionGroup, which the handler below does not catch: a
                            # restarted etcd would have stopped the controller's broker.
                            broken = e
                        office.cancel_scope.cancel()
                    if broken is not None:
                        raise broken
                else:
                    await self.election.wait_for_vacancy(revision)
            except EtcdError as e:
                log.warning("controller election: %s; trying again", e)
                await trio.sleep(0.5)

    async def _in_office(self) -> None:
        while True:
            try:
                await self.controller.serve_in_office(self.election.key)
                return
            except EtcdError as e:
                log.warning("controller: etcd did not answer (%s); trying again", e)
                await trio.sleep(0.5)

    async def leave(self) -> None:
        """Takes the registration back at once (a clean stop), then closes the client."""
        with trio.move_on_after(LEAVE_TIMEOUT) as scope:
            scope.shield = True
            try:
                if self.registration is not None:
                    await self.registration.deregister()
            except EtcdError as e:
                log.warning("could not deregister from etcd (its lease will lapse): %s", e)
            finally:
                await self.etcd.__aexit__(None, None, None)
