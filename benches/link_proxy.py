"""A TCP proxy in front of one broker's replication listener that can cut or slow the link from
one follower while both brokers stay up: the fault a network partition between a leader and a
follower makes. Followers are told apart by the client id their fetchers send in every
request header (``tidelog-replica-<node id>``), so one proxy per leader serves every link to
it. It runs its own Trio loop in a thread; ``cut``/``delay`` are read at every frame.
"""

from __future__ import annotations

import struct
import threading
from collections import Counter

import trio

FETCHER_PREFIX = b"tidelog-replica-"
IO_TIMEOUT = 60.0  # no frame of a live link takes this long: a wait past it is a dead peer


def follower_of(frame: bytes) -> int | None:
    """The node id in a request frame's client id (after the size prefix, header v1+: api
    key, version, correlation id, then the client id as an int16-sized string), if a replica
    fetcher sent it."""
    if len(frame) < 14:
        return None
    (size,) = struct.unpack_from(">h", frame, 12)
    client_id = frame[14 : 14 + max(size, 0)]
    if not client_id.startswith(FETCHER_PREFIX):
        return None
    try:
        return int(client_id[len(FETCHER_PREFIX) :])
    except ValueError:
        return None


class LinkProxy:
    """Listens on ``port`` (127.0.0.1) and forwards to ``target_port``. ``cut`` holds the
    followers whose links are down (their connections are closed, new ones closed at their
    first request); ``delay`` the seconds each of a follower's requests is held back."""

    def __init__(self, target_port: int, port: int) -> None:
        self.target_port, self.port = target_port, port
        self.cut: set[int] = set()
        self.delay: dict[int, float] = {}
        #: Connections closed because their follower's link was cut, by follower.
        self.refused: Counter[int] = Counter()
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), daemon=True)

    def __enter__(self) -> LinkProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the link proxy on port {self.port} did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._scope is not None:
            trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        with trio.CancelScope() as self._scope:
            self._ready.set()
            await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        try:
            with trio.fail_after(IO_TIMEOUT):
                upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except (OSError, trio.TooSlowError):
            await client.aclose()  # the broker behind is down: so is the link
            return
        follower: list[int | None] = [None]
        try:
            await self._pump(client, upstream, follower)
        except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass  # a link that broke or timed out is closed, as a cut one is

    async def _pump(
        self, client: trio.SocketStream, upstream: trio.SocketStream, follower: list[int | None]
    ) -> None:
        async with client, upstream, trio.open_nursery() as nursery:

            async def requests() -> None:
                while True:
                    with trio.fail_after(IO_TIMEOUT):
                        frame = await _frame(client)
                    if frame is None:
                        break
                    if follower[0] is None:
                        follower[0] = follower_of(frame)
                    if follower[0] in self.cut:
                        self.refused[follower[0]] += 1
                        break
                    await trio.sleep(self.delay.get(follower[0] or -1, 0.0))
                    with trio.fail_after(IO_TIMEOUT):
                        await upstream.send_all(frame)
                nursery.cancel_scope.cancel()

            async def responses() -> None:
                while True:
                    with trio.fail_after(IO_TIMEOUT):
                        chunk = await upstream.receive_some(1 << 16)
                    if not chunk or follower[0] in self.cut:
                        break
                    with trio.fail_after(IO_TIMEOUT):
                        await client.send_all(chunk)
                nursery.cancel_scope.cancel()

            nursery.start_soon(requests)
            nursery.start_soon(responses)


async def _frame(stream: trio.SocketStream) -> bytes | None:
    """One size-prefixed frame, prefix included; None at a clean end of stream."""
    head = await _exactly(stream, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    body = await _exactly(stream, size)
    return None if body is None else head + body


async def _exactly(stream: trio.SocketStream, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)
