"""One client connection: it reads frames, answers requests one at a time and in order
(Kafka processes one request per connection at a time), and writes each response as few
large writes, sending record bytes from segment files by sendfile where the stream is a
plain socket and copying them otherwise (a TLS or in-memory stream).

On a TLS listener the handshake comes first, within ``tls.HANDSHAKE_TIMEOUT``; on an SSL
listener a client certificate names the principal. On a SASL listener nothing but
ApiVersions, SaslHandshake and SaslAuthenticate (or, after a SaslHandshake v0, bare token
frames) is answered until the client has authenticated, and requests are capped at
``sasl.server.max.receive.size`` until then; any other request closes the connection, as
does one arriving after the session's ``connections.max.reauth.ms`` without
re-authentication."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

from tidelog.broker.apis import ADVERTISED, HANDLERS, RefusedWithoutResponse
from tidelog.broker.apis.sasl import authenticate_step
from tidelog.broker.config import SASL_PROTOCOLS
from tidelog.broker.context import RequestContext, Session
from tidelog.broker.quotas import REQUEST_PERCENTAGE
from tidelog.broker.sasl import AuthenticationFailed
from tidelog.broker.tls import HANDSHAKE_TIMEOUT, principal_of
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.framing import API_VERSIONS_KEY, decode_request_header, encode_response
from tidelog.protocol.primitives import INT32, DecodeError

if TYPE_CHECKING:
    from tidelog.broker.config import Endpoint
    from tidelog.broker.server import Broker

log = logging.getLogger("tidelog.broker")
RECEIVE_CHUNK = 256 * 1024
LARGE_REQUEST_BYTES = 256 << 10  # decoded and answered off the event loop above this
PRODUCE_KEY, FETCH_KEY = 0, 1
REQUEST_PREFIX = struct.Struct(">hhi")  # api key, api version, correlation id
SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY = 17, 36
#: What a SASL listener answers before the client has authenticated.
BEFORE_AUTHENTICATION = (API_VERSIONS_KEY, SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY)


class ConnectionClosed(Exception):
    """Why a connection is being closed (logged once)."""


#: Each API's name as Kafka's RequestMetrics label it (``Produce``, ``Fetch``, ...).
API_NAMES = {key: cls.__name__.removesuffix("Request") for key, cls in m.REQUESTS.items()}


@dataclasses.dataclass(slots=True)
class Reply:
    """A request's answer: its encoded chunks (None: no response), the quota's throttle,
    and what the metrics need (the context, the response, when handling started and ended)."""

    chunks: list[Any] | None
    throttle_ms: int = 0
    ctx: RequestContext | None = None
    response: Any = None
    started: float = 0.0
    handled: float = 0.0


def error_codes(obj: Any) -> Iterator[int]:
    """Every ``error_code`` in a response, nested ones included (Kafka's ``errorCounts``)."""
    code = getattr(obj, "error_code", None)
    if isinstance(code, int):
        yield code
    for name in getattr(type(obj), "__slots__", ()):
        value = getattr(obj, name, None)
        if isinstance(value, list):
            for item in value:
                if hasattr(type(item), "__slots__"):
                    yield from error_codes(item)


class InFlight:
    """The broker's open connections as shutdown sees them: how many requests are being
    handled, and the waits for a next request, which shutdown cancels at once."""

    def __init__(self) -> None:
        self.draining = False
        self.busy = 0
        self._quiet = trio.Event()  # set when busy drops to 0
        self.idle_scopes: set[trio.CancelScope] = set()

    def begin(self) -> None:
        self.busy += 1

    def end(self) -> None:
        self.busy -= 1
        if not self.busy:
            self._quiet.set()

    def drain(self) -> None:
        """No more requests are read; connections waiting for one close now."""
        self.draining = True
        for scope in self.idle_scopes:
            scope.cancel()

    async def wait_quiet(self) -> None:
        while self.busy:
            self._quiet = trio.Event()
            await self._quiet.wait()


class ClientConnection:
    """A client's stream, its session, and the requests it sends, answered in order."""

    def __init__(self, broker: Broker, stream: trio.abc.Stream, endpoint: Endpoint) -> None:
        self.broker = broker
        self.stream = stream
        transport = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        # Record bytes go out by sendfile only on a plain socket; other streams get copies.
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        host, port = "?", 0
        if isinstance(transport, trio.SocketStream):
            with contextlib.suppress(OSError):
                host, port = transport.socket.getpeername()[:2]
        self.session = Session(
            listener=endpoint.name,
            security_protocol=endpoint.security_protocol,
            peer_host=host,
            peer_port=port,
            authenticated=endpoint.security_protocol not in SASL_PROTOCOLS,
        )
        self._buf = bytearray()

    async def run(self) -> None:
        in_flight, metrics = self.broker.in_flight, self.broker.metrics
        metrics.connections_created[self.session.listener] += 1
        try:
            async with self.stream:
                if isinstance(self.stream, trio.SSLStream) and not await self._tls_handshake(self.stream):
                    return
                while not in_flight.draining:
                    # Waiting for a request is cancelled at shutdown; handling one is not.
                    with trio.CancelScope() as idle:
                        in_flight.idle_scopes.add(idle)
                        try:
                            frame = await self._read_frame()
                        finally:
                            in_flight.idle_scopes.discard(idle)
                    if idle.cancelled_caught or frame is None:
                        return
                    in_flight.begin()
                    try:
                        received = trio.current_time()
                        reply = await self._answer(frame)
                        if reply.chunks is not None:
                            await self._send(reply.chunks)
                        self._measured(reply, received)
                    finally:
                        in_flight.end()
                    throttle_ms = reply.throttle_ms
                    if self.session.close_reason is not None:
                        await trio.sleep(self.session.close_delay)
                        raise ConnectionClosed(self.session.close_reason)
                    if throttle_ms:  # over a quota: nothing more is read from it meanwhile
                        with trio.CancelScope() as muted:
                            in_flight.idle_scopes.add(muted)
                            try:
                                await trio.sleep(throttle_ms / 1000)
                            finally:
                                in_flight.idle_scopes.discard(muted)
                        if muted.cancelled_caught:
                            return
        except ConnectionClosed as e:
            log.warning("closing connection from %s: %s", self.session.peer, e)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        finally:
            metrics.connections_closed[self.session.listener] += 1

    async def _tls_handshake(self, stream: trio.SSLStream[Any]) -> bool:
        """Whether the client completed its TLS handshake in time (logged if not); on an SSL
        listener its certificate, if it sent one, names the principal."""
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await stream.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError) as e:
            why = "timed out" if isinstance(e, trio.TooSlowError) else repr(e.__cause__ or e)
            log.info("TLS handshake with %s failed: %s", self.session.peer, why)
            return False
        principal = principal_of(stream.getpeercert())
        if principal is not None and self.session.security_protocol == "SSL":
            self.session.principal = principal
            log.debug("TLS client %s is %s", self.session.peer, principal)
        return True

    async def _read_frame(self) -> bytes | None:
        config = self.broker.config
        limit, setting = config.socket_request_max_bytes, "socket.request.max.bytes"
        if not self.session.authenticated:
            setting = "sasl.server.max.receive.size"
            limit = int(config.setting(setting))
        buf = self._buf
        size = -1
        while True:
            if size < 0 and len(buf) >= 4:
                (size,) = INT32.unpack_from(buf, 0)
                if size < 0 or size > limit:
                    raise ConnectionClosed(f"frame of {size} bytes ({setting}={limit})")
            if size >= 0 and len(buf) >= 4 + size:
                frame = bytes(buf[4 : 4 + size])
                del buf[: 4 + size]
                return frame
            with trio.move_on_after(config.connections_max_idle_ms / 1000) as idle:
                data = await self.stream.receive_some(max(RECEIVE_CHUNK, size + 4 - len(buf)))
            if idle.cancelled_caught:
                raise ConnectionClosed(f"idle for {config.connections_max_idle_ms} ms")
            if not data:
                if buf:
                    raise ConnectionClosed(f"peer closed mid-frame ({len(buf)} bytes of a frame)")
                return None
            buf += data

    def _raw_token(self, frame: bytes) -> list[Any]:
        """A SASL token sent bare (after SaslHandshake v0), answered with the server's bare."""
        try:
            answer, _ = authenticate_step(self.broker, self.session, frame)
        except AuthenticationFailed as e:
            raise ConnectionClosed(str(e)) from None
        if self.session.sasl is None:
            self.session.sasl_raw_tokens = False
        return [INT32.pack(len(answer)) + answer]

    def _check_allowed(self, key: int) -> None:
        """Closes the connection on a request a SASL listener does not answer now."""
        session = self.session
        if not session.authenticated:
            if key not in BEFORE_AUTHENTICATION:
                raise ConnectionClosed(f"api key {key} before SASL authentication")
        elif (
            session.sasl_expires_at is not None
            and self.broker.clock.monotonic() > session.sasl_expires_at
            and key not in (SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY)
        ):
            raise ConnectionClosed(
                f"SASL session of {session.principal} ended (connections.max.reauth.ms) "
                "without re-authentication"
            )

    def _measured(self, reply: Reply, received: float) -> None:
        """Counts an answered request in the broker's metrics, with its times."""
        if reply.ctx is None or not self.broker.metrics.served:
            return
        now, timing = trio.current_time(), reply.ctx.timing
        local = reply.handled - reply.started - timing.remote
        self.broker.metrics.answered(
            API_NAMES[reply.ctx.api_key],
            reply.ctx.api_version,
            error_codes(reply.response),
            (  # in the order of metrics.TIME_PARTS
                (reply.started - received) * 1000,
                local * 1000,
                timing.remote * 1000,
                reply.throttle_ms,
                (now - reply.handled) * 1000,
                (now - received) * 1000 + reply.throttle_ms,
            ),
        )

    async def _answer(self, frame: bytes) -> Reply:
        """The response (its chunks; None: no response) and how long, in ms, the client must
        now wait for being over a quota."""
        if self.session.sasl_raw_tokens and self.session.sasl is not None:
            return Reply(self._raw_token(frame))
        if len(frame) < 8:
            raise ConnectionClosed(f"request of {len(frame)} bytes is shorter than a request header")
        key, version, correlation_id = REQUEST_PREFIX.unpack_from(frame)
        self._check_allowed(key)
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
                return Reply(encode_response(key, 0, correlation_id, body))
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
        ctx = RequestContext(
            self.broker, self.session, key, version, correlation_id, header.client_id, len(frame) + 4
        )
        started = trio.current_time()
        try:
            response = await HANDLERS[key](ctx, request)
        except RefusedWithoutResponse as e:
            raise ConnectionClosed(str(e)) from None
        except Exception:
            log.exception("handler for api key %d v%d failed", key, version)
            raise ConnectionClosed("internal error while handling the request") from None
        handled = trio.current_time()
        throttle_ms = getattr(response, "throttle_time_ms", 0) or 0
        if key not in (PRODUCE_KEY, FETCH_KEY):  # those wait by design; their byte rates count
            request_ms = ctx.throttle(REQUEST_PERCENTAGE, (handled - started) * 100)
            throttle_ms = max(throttle_ms, request_ms)
        if response is None:
            return Reply(None, throttle_ms, ctx, None, started, handled)
        if throttle_ms and "throttle_time_ms" in type(response).__slots__:
            setattr(response, "throttle_time_ms", throttle_ms)  # noqa: B010  (not every response has it)
        if offload:
            chunks = await trio.to_thread.run_sync(encode_response, key, version, correlation_id, response)
        else:
            chunks = encode_response(key, version, correlation_id, response)
        return Reply(chunks, throttle_ms, ctx, response, started, handled)

    async def _send(self, chunks: list[Any]) -> None:
        pending = bytearray()
        for chunk in chunks:
            if isinstance(chunk, (bytes, bytearray)):
                pending += chunk
                continue
            if self._socket is None or not self.broker.config.fetch_zero_copy:
                pending += chunk.read()
                continue
            if pending:
                await self.stream.send_all(pending)
                pending = bytearray()
            await self._sendfile(self._socket, chunk)
        if pending:
            await self.stream.send_all(pending)

    async def _sendfile(self, sock: trio.socket.SocketType, piece: Any) -> None:
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
                await self.stream.send_all(piece.read()[sent:])  # copying fallback (no sendfile here)
                return
            if n == 0:
                raise ConnectionClosed("segment file shrank while being sent")
            sent += n
