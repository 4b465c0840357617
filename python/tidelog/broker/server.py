"""The broker process: its services wired together (topics and partitions, the group
coordinator, the authorizer, the clock) and their life cycle; connections are served by
``connection.ClientConnection`` on every listener."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from tidelog.broker.authorizer import AclAuthorizer, AllowAll, Authorizer
from tidelog.broker.clock import Clock
from tidelog.broker.config import TLS_PROTOCOLS, BrokerConfig, Endpoint, raise_open_files_limit
from tidelog.broker.connection import ClientConnection, InFlight
from tidelog.broker.controller import Controller, LocalController
from tidelog.broker.groups.coordinator import Coordinator
from tidelog.broker.groups.store import OffsetsStore
from tidelog.broker.metadata import DepartedBrokers, MetadataImage
from tidelog.broker.metrics import serve_metrics, stop_metrics
from tidelog.broker.quotas import QuotaManager
from tidelog.broker.replicas import ReplicaManager
from tidelog.broker.tls import server_context
from tidelog.storage import Log

if TYPE_CHECKING:
    from tidelog.cluster.member import ClusterMember

log = logging.getLogger("tidelog.broker")
#: Seconds that requests in flight get to finish at shutdown.
SHUTDOWN_GRACE = 10.0
#: A listener to serve, with the endpoint it stands for (its name and security protocol).
BoundListener = tuple[Endpoint, trio.abc.Listener[Any]]


class Broker:
    """A single-node Kafka-compatible broker over tidelog's storage.

    Under Trio: ``async with Broker(config) as b: ...`` (serving in the background while the
    block runs) or ``await broker.serve()``; from synchronous code:
    ``handle = Broker(config).run_in_thread()``, then ``handle.stop()``. ``clock`` is where
    partitions, the group coordinator and retention read the time (a test may drive it).
    """

    def __init__(
        self, config: BrokerConfig | None = None, *, clock: Clock | None = None, **overrides: Any
    ) -> None:
        # The caller's config is left as it is: overrides apply to a copy.
        self.config = dataclasses.replace(config or BrokerConfig(), **overrides)
        for key in self.config.unknown:
            log.warning("the setting %r is not one tidelog knows: ignored (tidelog serve --help-config)", key)
        self.clock = clock or Clock()
        self.replicas = ReplicaManager(self.config, self.clock)
        #: Brokers that just left the cluster, still listed in Metadata answers (see there).
        self.departed = DepartedBrokers(
            int(self.config.setting("tidelog.metadata.departed.broker.ms")) / 1000
        )
        #: With ``tidelog.etcd.endpoints``: this broker's membership of that cluster.
        self.member: ClusterMember | None = None
        self.controller: Controller
        if self.config.etcd_endpoints:
            # Imported here: etcd's HTTP client is 30 ms of a single broker's start-up.
            from tidelog.cluster.member import ClusterMember

            self.member = ClusterMember(self.config, self.clock, self._apply_image)
            self.controller = self.member.controller
        else:
            self.controller = LocalController(self.config, self.replicas)
        self.replicas.alter_isr = self.controller.alter_isr
        #: What the hot path counts, served at ``/metrics`` with ``metrics.listen``.
        self.metrics = self.replicas.metrics
        self.authorizer: Authorizer = AllowAll()
        if self.config.setting("authorizer.class.name"):
            supers = [u.strip() for u in self.config.setting("super.users").split(";") if u.strip()]
            allow_if_none = self.config.setting("allow.everyone.if.no.acl.found").lower() == "true"
            self.authorizer = AclAuthorizer(lambda: self.image.acls, supers, allow_if_none)
        #: Client quotas' usage and throttle times.
        self.quotas = QuotaManager(
            lambda: self.image.client_quotas,
            int(self.config.setting("quota.window.num")),
            float(self.config.setting("quota.window.size.seconds")),
        )
        # Made here, so that a listener that cannot be served stops the broker at once.
        #: What each TLS listener serves with, by listener name.
        self.tls_contexts = {
            e.name: server_context(self.config, e.name)
            for e in self.config.endpoints()
            if e.security_protocol in TLS_PROTOCOLS
        }
        self.port = self.config.port
        #: Where ``/metrics`` is served (set by ``serve`` with ``metrics.listen``).
        self.metrics_port: int | None = None
        #: The listeners being served, with their bound ports (set by ``serve``).
        self.endpoints: list[Endpoint] = []
        self._cancel: trio.CancelScope | None = None
        self._accepting = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self.in_flight = InFlight()
        store = OffsetsStore(
            self.controller,
            self.replicas,
            partitions=int(self.config.setting("offsets.topic.num.partitions")),
            segment_bytes=int(self.config.setting("offsets.topic.segment.bytes")),
            compact_bytes=int(self.config.setting("tidelog.offsets.compact.bytes")),
            nursery_holder=lambda: self._nursery,
            replication_factor=int(self.config.setting("offsets.topic.replication.factor")),
            commit_timeout_s=int(self.config.setting("offsets.commit.timeout.ms")) / 1000,
        )
        self.groups = Coordinator(store, self.config, lambda: self._nursery, self.clock)
        self.replicas.leadership_listeners.append(self.groups.on_leadership)
        self._nursery_manager: Any = None

    def advertised(self, listener: str) -> tuple[str, int]:
        """The (host, port) that clients which came in on ``listener`` are told to use."""
        for e in self.endpoints:
            if e.name == listener:
                return self.config.advertised(listener, e)
        raise KeyError(f"no listener named {listener}")

    @property
    def advertised_host(self) -> str:
        return self.advertised(self.endpoints[0].name)[0] if self.endpoints else self.config.host

    @property
    def advertised_port(self) -> int:
        return self.advertised(self.endpoints[0].name)[1] if self.endpoints else self.port

    @property
    def image(self) -> MetadataImage:
        """The metadata in force on this broker (the last image the replica manager applied)."""
        return self.replicas.image

    async def _apply_image(self, image: MetadataImage) -> None:
        self.departed.note(self.replicas.image, image, self.clock.monotonic())
        await self.replicas.apply(image)

    @property
    def cluster_id(self) -> str:
        return self.image.cluster_id

    @property
    def fenced(self) -> bool:
        """True while this broker may not act as a leader: in a cluster, from when its etcd
        lease may have lapsed until it has registered again."""
        return self.member is not None and self.member.fenced

    # ---- life cycle ----

    def _advertised_endpoints(self) -> list[Endpoint]:
        out = []
        for e in self.endpoints:
            host, port = self.advertised(e.name)
            out.append(dataclasses.replace(e, host=host, port=port))
        return out

    async def _load(self) -> None:
        """Joins the cluster, or reads the local metadata; then opens the logs the first
        image names (in a worker thread), before anything is served."""
        if self.member is not None:
            image = await self.member.join(self._advertised_endpoints())
        else:
            assert isinstance(self.controller, LocalController)
            image = await trio.to_thread.run_sync(self.controller.load, self._advertised_endpoints())
        await trio.to_thread.run_sync(self.replicas.load, image)

    async def open_listeners(self) -> list[BoundListener]:
        """A TCP listener for every configured endpoint (``listeners``), in TLS for the SSL
        and SASL_SSL ones."""
        out: list[BoundListener] = []
        try:
            for e in self.config.endpoints():
                for tcp in await trio.open_tcp_listeners(e.port, host=e.host):
                    if e.security_protocol in TLS_PROTOCOLS:
                        tls = self.tls_contexts[e.name]
                        out.append((e, trio.SSLListener(tcp, tls, https_compatible=False)))
                    else:
                        out.append((e, tcp))
        except BaseException:
            for _, opened in out:
                await opened.aclose()
            raise
        return out

    async def serve(
        self, listeners: Sequence[BoundListener] | None = None, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serves until cancelled or ``shutdown()``; then stops accepting, lets in-flight
        requests finish (briefly), and closes every log cleanly. ``listeners``: what to serve
        on (any Trio listener, such as an in-memory one), by default ``open_listeners()``."""
        files = raise_open_files_limit()
        bound = list(listeners) if listeners is not None else await self.open_listeners()
        self.endpoints = []
        for e, served in bound:
            tcp = served.transport_listener if isinstance(served, trio.SSLListener) else served
            if isinstance(tcp, trio.SocketListener):
                e = dataclasses.replace(e, port=tcp.socket.getsockname()[1])
            if all(x.name != e.name for x in self.endpoints):
                self.endpoints.append(e)
        if self.endpoints:
            self.port = self.endpoints[0].port
        try:
            await self._load()
            await self.replicas.announce_leadership()
        except BaseException:
            for _, listener in bound:
                await listener.aclose()
            if self.member is not None:
                await self.member.leave()
            raise
        log.info(
            "broker %d listening on %s (data in %s, engine %s, open-files limit %d, up to %d partitions)",
            self.config.node_id,
            ", ".join(map(str, self.endpoints)),
            self.config.data_dir,
            self.config.engine or "auto",
            files,
            self.config.partition_limit(),
        )
        metrics_server = None
        try:
            if listen := self.config.setting("metrics.listen"):
                host, _, port = listen.rpartition(":")
                metrics_server = serve_metrics(self, host or "127.0.0.1", int(port))
                self.metrics_port = metrics_server.server_port
            with trio.CancelScope() as self._cancel:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self.groups.sweep)
                    nursery.start_soon(self._retention_loop)
                    nursery.start_soon(self.replicas.run)
                    nursery.start_soon(self._accept, bound, nursery)
                    if self.member is not None:
                        nursery.start_soon(self.member.run)
                    task_status.started(self)
        finally:
            if metrics_server is not None:
                await stop_metrics(self, metrics_server)
            for _, listener in bound:
                await listener.aclose()
            if self.member is not None:
                await self.member.leave()
            await trio.to_thread.run_sync(self.replicas.close)
            log.info("broker %d stopped; logs flushed and closed cleanly", self.config.node_id)

    async def _accept(self, bound: Sequence[BoundListener], nursery: trio.Nursery) -> None:
        """Accepts on every listener until shutdown; connections run in the broker's nursery,
        so they outlive the accepting (shutdown lets their requests finish)."""
        with self._accepting:
            async with trio.open_nursery() as accepting:
                for endpoint, listener in bound:
                    handler = functools.partial(self._connection, endpoint)
                    accepting.start_soon(
                        functools.partial(trio.serve_listeners, handler, [listener], handler_nursery=nursery)
                    )

    async def _connection(self, endpoint: Endpoint, stream: trio.abc.Stream) -> None:
        await ClientConnection(self, stream, endpoint).run()

    def shutdown(self) -> None:
        """Stops accepting and closes idle connections at once; requests being handled get
        up to ``SHUTDOWN_GRACE`` seconds to finish and be answered; then everything stops and
        the logs are closed cleanly. Call it on the broker's event loop."""
        if self._nursery is None or self.in_flight.draining:
            if self._cancel is not None and self._nursery is None:
                self._cancel.cancel()
            return
        self._accepting.cancel()
        self.in_flight.drain()
        self._nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        with trio.move_on_after(SHUTDOWN_GRACE):
            await self.in_flight.wait_quiet()
        if self.in_flight.busy:
            log.warning(
                "%d request(s) still running after %ss: stopping anyway", self.in_flight.busy, SHUTDOWN_GRACE
            )
        assert self._cancel is not None
        self._cancel.cancel()

    async def __aenter__(self) -> Broker:
        self._nursery_manager = trio.open_nursery()
        nursery = await self._nursery_manager.__aenter__()
        await nursery.start(self.serve)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.shutdown()
        await self._nursery_manager.__aexit__(*exc)

    def run_in_thread(self) -> BrokerThread:
        """Starts the broker on its own thread with its own Trio loop; returns once it listens."""
        return BrokerThread(self)

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(self.config.log_retention_check_interval_ms / 1000)
            for part in self.replicas.all_online():
                retention = functools.partial(Log.apply_retention, now_ms=self.clock.wall_ms())
                deleted = await part.run_exclusive(retention)
                if deleted:
                    log.info("retention deleted %d segment(s) of %s-%d", deleted, part.topic, part.index)


class BrokerThread:
    """A broker serving on a background thread (for synchronous programs and tests)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tidelog-broker", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    @property
    def port(self) -> int:
        return self.broker.port

    @property
    def bootstrap(self) -> str:
        return f"{self.broker.advertised_host}:{self.broker.port}"

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.broker.serve)
                self._ready.set()

        try:
            trio.run(main)
        except BaseException as e:
            self._error = e
        finally:
            self._ready.set()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs ``fn(*args)`` on the broker's event loop thread and returns its result."""
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Runs ``await fn(*args)`` on the broker's event loop and returns its result."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self, timeout: float = 30) -> None:
        """Stops serving and closes the logs cleanly; waits for the thread to finish."""
        if self._thread.is_alive() and self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self.broker.shutdown, trio_token=self._token)
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BrokerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run(config: BrokerConfig, on_ready: Callable[[Broker], None] | None = None) -> None:
    """Runs a broker in this thread until SIGINT/SIGTERM; then shuts down cleanly."""
    import signal

    async def main() -> None:
        broker = Broker(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.serve)
            if on_ready:
                on_ready(broker)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for sig in signals:
                    log.info("received signal %d: shutting down", sig)
                    broker.shutdown()
                    break

    trio.run(main)
