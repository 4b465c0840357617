"""Followers copying their leaders, with Kafka's own protocol: one fetcher task per source
broker fetches every partition this broker follows there, in one Fetch request at a time
carrying this broker's id as ``replica_id`` (which makes the leader count its progress and
answer past the high watermark). Each response's batches are appended with the leader's
offsets and epochs (``Partition.append_as_follower``) and its high watermark is taken up.

A partition whose fetch fails (its leader moved, an epoch changed) waits
``replica.fetch.backoff.ms`` before it is fetched again; a broken connection waits as long
and reconnects. Every network wait has a deadline."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from tidelog.broker.config import BrokerConfig, Endpoint
from tidelog.broker.partition import Partition
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.protocol import _messages as m
from tidelog.protocol.framing import encode_request, response_header_version
from tidelog.protocol.primitives import INT32, DecodeError, Reader

log = logging.getLogger("tidelog.replication")
FETCH_VERSION = 12  # the newest this broker answers, with replica_id in the request
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0  # beyond the fetch's own wait
RESPONSE_MAX_BYTES = 10 << 20  # replica.fetch.response.max.bytes
Key = tuple[str, int]


class ReplicaFetcherManager:
    """The fetcher tasks of this broker, one per leader it follows partitions of. ``update``
    (from the replica manager, on every image) says which partitions follow which leader;
    ``run`` hosts the tasks."""

    def __init__(self, config: BrokerConfig, endpoint_of: Callable[[int], Endpoint | None]) -> None:
        self.config = config
        self.endpoint_of = endpoint_of
        self._fetchers: dict[int, ReplicaFetcher] = {}
        self._nursery: trio.Nursery | None = None
        self._wanted: dict[int, dict[Key, Partition]] = {}

    def update(self, following: dict[int, dict[Key, Partition]]) -> None:
        """The partitions to follow, by leader id; fetchers start and stop to match."""
        self._wanted = following
        for leader, fetcher in list(self._fetchers.items()):
            fetcher.partitions = following.get(leader, {})
            fetcher.changed()
            if not fetcher.partitions:
                del self._fetchers[leader]
        if self._nursery is not None:
            self._start_missing()

    def _start_missing(self) -> None:
        assert self._nursery is not None
        for leader, parts in self._wanted.items():
            if parts and leader not in self._fetchers:
                fetcher = self._fetchers[leader] = ReplicaFetcher(
                    self.config, leader, self.endpoint_of, parts
                )
                self._nursery.start_soon(fetcher.run, name=f"replica-fetcher-{leader}")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._start_missing()
            await trio.sleep_forever()


class ReplicaFetcher:
    """Fetches this broker's partitions led by ``leader`` until it has none left."""

    def __init__(
        self,
        config: BrokerConfig,
        leader: int,
        endpoint_of: Callable[[int], Endpoint | None],
        partitions: dict[Key, Partition],
    ) -> None:
        self.config = config
        self.leader = leader
        self.endpoint_of = endpoint_of
        self.partitions = partitions
        self.backoff = int(config.setting("replica.fetch.backoff.ms")) / 1000
        self.wait_ms = int(config.setting("replica.fetch.wait.max.ms"))
        self.max_bytes = int(config.setting("replica.fetch.max.bytes"))
        self._delayed: dict[Key, float] = {}  # partitions resting after an error, until when
        self._changed = trio.Event()
        self._correlation = 0

    def changed(self) -> None:
        """The partition set or the cluster changed: a resting fetcher looks again."""
        self._delayed.clear()
        self._changed.set()
        self._changed = trio.Event()

    async def run(self) -> None:
        while self.partitions:
            endpoint = self.endpoint_of(self.leader)
            if endpoint is None:  # the leader is not registered: wait for the metadata to change
                with trio.move_on_after(self.backoff):
                    await self._changed.wait()
                continue
            try:
                with trio.fail_after(CONNECT_TIMEOUT):
                    stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
                async with stream:
                    while self.partitions and self.endpoint_of(self.leader) == endpoint:
                        await self._fetch_once(stream)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, DecodeError, EOFError) as e:
                log.warning("fetching from broker %d (%s) failed: %r; retrying", self.leader, endpoint, e)
                await trio.sleep(self.backoff)

    def _request(self) -> tuple[m.FetchRequest, dict[Key, tuple[Partition, int]]]:
        """The next Fetch, and the partitions it asks for with the leader epoch asked in."""
        F = m.FetchRequest
        now = trio.current_time()
        asked: dict[Key, tuple[Partition, int]] = {}
        topics: dict[str, list[m.FetchRequest.FetchTopic.FetchPartition]] = {}
        for key, part in self.partitions.items():
            if self._delayed.get(key, 0) > now:
                continue
            asked[key] = (part, part.leader_epoch)
            topics.setdefault(key[0], []).append(
                F.FetchTopic.FetchPartition(
                    partition=key[1],
                    current_leader_epoch=part.leader_epoch,
                    fetch_offset=part.log.end_offset,
                    last_fetched_epoch=part.epochs.latest_epoch,
                    log_start_offset=part.log_start_offset,
                    partition_max_bytes=self.max_bytes,
                )
            )
        request = F(
            replica_id=self.config.node_id,
            max_wait_ms=self.wait_ms,
            min_bytes=1,
            max_bytes=RESPONSE_MAX_BYTES,
            isolation_level=0,
            session_id=0,
            session_epoch=-1,
            topics=[F.FetchTopic(topic=t, partitions=ps) for t, ps in topics.items()],
        )
        return request, asked

    async def _fetch_once(self, stream: trio.SocketStream) -> None:
        request, asked = self._request()
        if not asked:
            wake = min(self._delayed.values(), default=trio.current_time() + self.backoff)
            with trio.move_on_at(wake):
                await self._changed.wait()
            return
        with trio.fail_after(self.wait_ms / 1000 + REQUEST_TIMEOUT):
            response = await self._exchange(stream, request)
        for topic in response.responses:
            for p in topic.partitions:
                key = (topic.topic, p.partition_index)
                if key in asked and self.partitions.get(key) is asked[key][0]:
                    await self._take(*asked[key], p)

    async def _exchange(self, stream: trio.SocketStream, request: m.FetchRequest) -> m.FetchResponse:
        self._correlation += 1
        header = m.RequestHeader(
            request_api_key=request.API_KEY,
            request_api_version=FETCH_VERSION,
            correlation_id=self._correlation,
            client_id=f"tidelog-replica-{self.config.node_id}",
        )
        await stream.send_all(encode_request(header, request, FETCH_VERSION))
        (size,) = INT32.unpack(await _receive(stream, 4))
        r = Reader(await _receive(stream, size))
        got = m.ResponseHeader.decode(r, response_header_version(request.API_KEY, FETCH_VERSION))
        if got.correlation_id != self._correlation:
            raise DecodeError(f"response to request {got.correlation_id}, not {self._correlation}", 0)
        response: m.FetchResponse = m.FetchResponse.decode(r, FETCH_VERSION)
        return response

    async def _take(
        self, part: Partition, epoch: int, p: m.FetchResponse.FetchableTopicResponse.PartitionData
    ) -> None:
        key = (part.topic, part.index)
        if p.error_code != ec.NONE:
            log.info(
                "fetch of %s-%d from broker %d: error %s; retrying in %.1fs",
                part.topic,
                part.index,
                self.leader,
                ec(p.error_code).name,
                self.backoff,
            )
            self._delayed[key] = trio.current_time() + self.backoff
            return
        try:
            if p.records:
                await part.append_as_follower(p.records, self.leader, epoch)
        except TidelogError as e:
            log.warning("replica %s-%d could not append what broker %d sent: %s", *key, self.leader, e)
            self._delayed[key] = trio.current_time() + self.backoff
            return
        part.follower_high_watermark(p.high_watermark)


async def _receive(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise EOFError("the leader closed the connection")
        buf += chunk
    return bytes(buf)
