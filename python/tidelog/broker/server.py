"""The broker process: a Trio listener, one task per connection, requests answered in
arrival order (Kafka processes one request per connection at a time), responses written as
few large writes with record bytes sent from segment files by sendfile."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import logging
import os
import struct
import threading
import uuid
from collections.abc import Callable
from typing import Any

import trio

from tidelog.broker.apis import ADVERTISED, CURRENT_PEER, HANDLERS, RefusedWithoutResponse
from tidelog.broker.authorizer import AllowAll, Authorizer
from tidelog.broker.config import BrokerConfig, raise_open_files_limit
from tidelog.broker.groups.coordinator import Coordinator
from tidelog.broker.groups.store import OffsetsStore
from tidelog.broker.topics import TopicManager
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.framing import API_VERSIONS_KEY, decode_request_header, encode_response
from tidelog.protocol.primitives import INT32, DecodeError
from tidelog.storage.fileio import write_file_atomic

log = logging.getLogger("tidelog.broker")
PRODUCER_ID_BLOCK = 1000
RECEIVE_CHUNK = 256 * 1024
#: Seconds that requests in flight get to finish at shutdown.
SHUTDOWN_GRACE = 10.0
LARGE_REQUEST_BYTES = 256 << 10  # decoded and answered off the event loop above this
PRODUCE_KEY = 0
REQUEST_PREFIX = struct.Struct(">hhi")  # api key, api version, correlation id


class ConnectionClosed(Exception):
    """Why a connection is being closed (logged once)."""


class Broker:
    """A single-node Kafka-compatible broker over tidelog's storage.

    Under Trio: ``async with Broker(config) as b: ...`` (serving in the background while the
    block runs) or ``await broker.serve()``; from synchronous code:
    ``handle = Broker(config).run_in_thread()``, then ``handle.stop()``.
    """

    def __init__(self, config: BrokerConfig | None = None, **overrides: Any) -> None:
        # The caller's config is left as it is: overrides apply to a copy.
        self.config = dataclasses.replace(config or BrokerConfig(), **overrides)
        for key in self.config.unknown:
            log.warning("the setting %r is not one tidelog knows: ignored (tidelog serve --help-config)", key)
        self.topics = TopicManager(self.config)
        self.authorizer: Authorizer = AllowAll()
        self.port = self.config.port
        self.cluster_id = ""
        self._next_producer_id = 0
        self._producer_id_limit = 0
        self._producer_id_lock = trio.Lock()
        self._cancel: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._draining = False
        self._busy = 0  # requests being handled
        self._quiet = trio.Event()  # set when _busy drops to 0
        self._accept_scopes: set[trio.CancelScope] = set()
        self._idle_scopes: set[trio.CancelScope] = set()
        store = OffsetsStore(
            self.topics,
            partitions=int(self.config.setting("offsets.topic.num.partitions")),
            segment_bytes=int(self.config.setting("offsets.topic.segment.bytes")),
            compact_bytes=int(self.config.setting("tidelog.offsets.compact.bytes")),
            nursery_holder=lambda: self._nursery,
        )
        self.groups = Coordinator(store, self.config, lambda: self._nursery)
        self._nursery_manager: Any = None

    @property
    def advertised_host(self) -> str:
        return self.config.advertised_host or self.config.host

    @property
    def advertised_port(self) -> int:
        return self.config.advertised_port or self.port

    # ---- life cycle ----

    def _load_meta(self) -> None:
        meta = os.path.join(self.config.data_dir, "meta")
        os.makedirs(meta, exist_ok=True)
        props = os.path.join(meta, "meta.properties")
        if os.path.exists(props):
            with open(props) as f:
                values = dict(line.split("=", 1) for line in f.read().split() if "=" in line)
            self.cluster_id = values["cluster.id"]
        else:
            self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            text = f"cluster.id={self.cluster_id}\nnode.id={self.config.node_id}\nversion=1\n"
            write_file_atomic(meta, "meta.properties", text.encode())
        ids = os.path.join(meta, "producer-ids")
        self._next_producer_id = 0
        if os.path.exists(ids):
            with open(ids) as f:
                self._next_producer_id = int(f.read())
        self._producer_id_limit = self._next_producer_id
        self.topics.load()

    async def next_producer_id(self) -> int:
        """Producer ids survive restarts: blocks of ids are reserved on disk before use, one
        reservation at a time (concurrent InitProducerIds wait for it)."""
        async with self._producer_id_lock:
            if self._next_producer_id >= self._producer_id_limit:
                limit = self._next_producer_id + PRODUCER_ID_BLOCK
                meta = os.path.join(self.config.data_dir, "meta")
                await trio.to_thread.run_sync(write_file_atomic, meta, "producer-ids", str(limit).encode())
                self._producer_id_limit = limit
            pid = self._next_producer_id
            self._next_producer_id += 1
            return pid

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serves until cancelled or ``shutdown()``; then stops accepting, lets in-flight
        requests finish (briefly), and closes every log cleanly."""
        files = raise_open_files_limit()
        await trio.to_thread.run_sync(self._load_meta)
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info(
            "broker %d listening on %s:%d (data in %s, engine %s, open-files limit %d, up to %d partitions)",
            self.config.node_id,
            self.config.host,
            self.port,
            self.config.data_dir,
            self.topics.config.engine or "auto",
            files,
            self.config.partition_limit(),
        )
        try:
            with trio.CancelScope() as self._cancel:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.groups.load()
                    nursery.start_soon(self.groups.sweep)
                    nursery.start_soon(self._retention_loop)
                    nursery.start_soon(self.topics.purge_loop)
                    for listener in listeners:
                        nursery.start_soon(self._accept_loop, listener, nursery)
                    task_status.started(self)
        finally:
            for listener in listeners:
                await listener.aclose()
            await trio.to_thread.run_sync(self.topics.close)
            log.info("broker %d stopped; logs flushed and closed cleanly", self.config.node_id)

    def shutdown(self) -> None:
        """Stops accepting and closes idle connections at once; requests being handled get
        up to ``SHUTDOWN_GRACE`` seconds to finish and be answered; then everything stops and
        the logs are closed cleanly. Call it on the broker's event loop."""
        if self._nursery is None or self._draining:
            if self._cancel is not None and self._nursery is None:
                self._cancel.cancel()
            return
        self._draining = True
        for scope in (*self._accept_scopes, *self._idle_scopes):
            scope.cancel()
        self._nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        with trio.move_on_after(SHUTDOWN_GRACE):
            while self._busy:
                self._quiet = trio.Event()
                await self._quiet.wait()
        if self._busy:
            log.warning("%d request(s) still running after %ss: stopping anyway", self._busy, SHUTDOWN_GRACE)
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
            for topic in list(self.topics.topics.values()):
                for part in self.topics.online(topic):
                    deleted = await part.run_exclusive(lambda plog: plog.apply_retention())
                    if deleted:
                        log.info("retention deleted %d segment(s) of %s-%d", deleted, topic.name, part.index)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        with trio.CancelScope() as scope:
            self._accept_scopes.add(scope)
            while True:
                try:
                    stream = await listener.accept()
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                        log.warning("accept failed (%s); retrying shortly", e)
                        await trio.sleep(0.1)
                        continue
                    raise
                nursery.start_soon(self._connection, stream)

    # ---- one connection ----

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = host = "?"
        CURRENT_PEER.set(f"/{host}")
        buf = bytearray()
        try:
            async with stream:
                while not self._draining:
                    # Waiting for a request is cancelled at shutdown; handling one is not.
                    with trio.CancelScope() as idle:
                        self._idle_scopes.add(idle)
                        try:
                            frame = await self._read_frame(stream, buf)
                        finally:
                            self._idle_scopes.discard(idle)
                    if idle.cancelled_caught or frame is None:
                        return
                    self._busy += 1
                    try:
                        chunks = await self._handle(frame)
                        if chunks is not None:
                            await self._send(stream, chunks)
                    finally:
                        self._busy -= 1
                        if not self._busy:
                            self._quiet.set()
        except ConnectionClosed as e:
            log.warning("closing connection from %s: %s", peer, e)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass

    async def _read_frame(self, stream: trio.SocketStream, buf: bytearray) -> bytes | None:
        limit = self.config.socket_request_max_bytes
        size = -1
        while True:
            if size < 0 and len(buf) >= 4:
                (size,) = INT32.unpack_from(buf, 0)
                if size < 0 or size > limit:
                    raise ConnectionClosed(f"frame of {size} bytes (socket.request.max.bytes={limit})")
            if size >= 0 and len(buf) >= 4 + size:
                frame = bytes(buf[4 : 4 + size])
                del buf[: 4 + size]
                return frame
            with trio.move_on_after(self.config.connections_max_idle_ms / 1000) as idle:
                data = await stream.receive_some(max(RECEIVE_CHUNK, size + 4 - len(buf)))
            if idle.cancelled_caught:
                raise ConnectionClosed(f"idle for {self.config.connections_max_idle_ms} ms")
            if not data:
                if buf:
                    raise ConnectionClosed(f"peer closed mid-frame ({len(buf)} bytes of a frame)")
                return None
            buf += data

    async def _handle(self, frame: bytes) -> list[Any] | None:
        if len(frame) < 8:
            raise ConnectionClosed(f"request of {len(frame)} bytes is shorter than a request header")
        key, version, correlation_id = REQUEST_PREFIX.unpack_from(frame)
        advertised = ADVERTISED.get(key)
        if advertised is None:
            raise ConnectionClosed(f"unknown or unsupported api key {key} (version {version})")
        if not advertised[0] <= version <= advertised[1]:
            if key == API_VERSIONS_KEY:
                # Answered without parsing the rest: the client retries with a version listed.
                body = m.ApiVersionsResponse(
                    error_code=ec.UNSUPPORTED_VERSION,
                    api_keys=[
                        m.ApiVersionsResponse.ApiVersion(
                            api_key=key, min_version=advertised[0], max_version=advertised[1]
                        )
                    ],
                )
                return encode_response(key, 0, correlation_id, body)
            raise ConnectionClosed(
                f"api key {key} version {version} is not supported ({advertised[0]}-{advertised[1]})"
            )
        try:
            header, reader = decode_request_header(frame)
        except DecodeError as e:
            raise ConnectionClosed(f"unparseable request header: {e}") from None
        # A large request (thousands of names) is decoded, and its response encoded, in a worker
        # thread: the interpreter lock passes to the event loop every few ms meanwhile, so
        # other connections are served. Produce is exempt: its records are not parsed here.
        offload = len(frame) > LARGE_REQUEST_BYTES and key != PRODUCE_KEY
        try:
            if offload:
                request = await trio.to_thread.run_sync(m.REQUESTS[key].decode, reader, version)
            else:
                request = m.REQUESTS[key].decode(reader, version)
        except DecodeError as e:
            raise ConnectionClosed(f"unparseable {m.REQUESTS[key].__name__} v{version}: {e}") from None
        try:
            response = await HANDLERS[key](self, request, header, version)
        except RefusedWithoutResponse as e:
            raise ConnectionClosed(str(e)) from None
        except Exception:
            log.exception("handler for api key %d v%d failed", key, version)
            raise ConnectionClosed("internal error while handling the request") from None
        if response is None:
            return None
        if offload:
            return await trio.to_thread.run_sync(
                encode_response, key, version, header.correlation_id, response
            )
        return encode_response(key, version, header.correlation_id, response)

    async def _send(self, stream: trio.SocketStream, chunks: list[Any]) -> None:
        pending = bytearray()
        for chunk in chunks:
            if isinstance(chunk, (bytes, bytearray)):
                pending += chunk
                continue
            if pending:
                await stream.send_all(pending)
                pending = bytearray()
            await self._sendfile(stream, chunk)
        if pending:
            await stream.send_all(pending)

    async def _sendfile(self, stream: trio.SocketStream, piece: Any) -> None:
        if not self.config.fetch_zero_copy:
            await stream.send_all(piece.read())
            return
        sock = stream.socket
        sent = 0
        while sent < piece.length:
            try:
                n = piece.send(sock.fileno(), sent)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                continue
            except OSError as e:
                if e.errno not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSOCK, errno.EOPNOTSUPP):
                    raise
                await stream.send_all(piece.read()[sent:])  # copying fallback (no sendfile here)
                return
            if n == 0:
                raise ConnectionClosed("segment file shrank while being sent")
            sent += n


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
