"""Followers copying their leaders, with Kafka's own protocol: one fetcher task per source
broker fetches every partition this broker follows there, in one Fetch request at a time
carrying this broker's id as ``replica_id`` (which makes the leader count its progress and
answer past the high watermark). Each response's batches are appended with the leader's
offsets and epochs (``Partition.append_as_follower``) and its high watermark is taken up.

Before a partition's first fetch in a leader epoch, the fetcher asks the leader for the end
offset of the follower's latest epoch (OffsetForLeaderEpoch) and truncates the log there if
it is longer: a tail written by an old leader and never committed is cut, never kept beside
what the new leader wrote (Kafka's KIP-101/KIP-279 rule). A Fetch answered with a
``diverging_epoch`` (the follower's ``last_fetched_epoch`` disagrees with the leader's log)
truncates the same way before fetching again.

Followers connect to the leader's ``inter.broker.listener.name`` listener, in TLS and with
SASL where it needs them (the broker's own credentials: ``sasl.mechanism.inter.broker.protocol``
and the ``username``/``password`` of ``sasl.jaas.config``).

A partition whose fetch fails (its leader moved, an epoch changed) waits
``replica.fetch.backoff.ms`` before it is fetched again; a broken connection waits as long
and reconnects. Every network wait has a deadline."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from tidelog.broker.config import BrokerConfig, Endpoint
from tidelog.broker.partition import Partition
from tidelog.buffers import as_view
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.protocol import _messages as m
from tidelog.protocol.framing import encode_request, response_header_version
from tidelog.protocol.primitives import INT32, DecodeError, Reader
from tidelog.protocol.security import SaslClient
from tidelog.records import complete_batches

log = logging.getLogger("tidelog.replication")
FETCH_VERSION = 12  # the newest this broker answers, with replica_id in the request
OFFSET_FOR_LEADER_EPOCH_VERSION = 4
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
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._start_missing()
                await trio.sleep_forever()
        finally:
            # Stopping: an image applied after this (a late watch event) starts no fetcher.
            self._nursery = None


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
        self.security = config.inter_broker_security()
        self.leader = leader
        self.endpoint_of = endpoint_of
        self.partitions = partitions
        self.backoff = int(config.setting("replica.fetch.backoff.ms")) / 1000
        self.wait_ms = int(config.setting("replica.fetch.wait.max.ms"))
        self.max_bytes = int(config.setting("replica.fetch.max.bytes"))
        self._delayed: dict[Key, float] = {}  # partitions resting after an error, until when
        self._checked: dict[Key, tuple[Partition, int]] = {}  # truncated for (replica, epoch)
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
                    stream = await self._connect(endpoint)
                async with stream:
                    while self.partitions and self.endpoint_of(self.leader) == endpoint:
                        await self._fetch_once(stream)
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, DecodeError, EOFError) as e:
                log.warning("fetching from broker %d (%s) failed: %r; retrying", self.leader, endpoint, e)
                await trio.sleep(self.backoff)

    async def _connect(self, endpoint: Endpoint) -> trio.abc.Stream:
        """A connection to the leader's inter-broker listener, in TLS and logged in with SASL
        as that listener requires (``BrokerConfig.inter_broker_security``); ConnectionError
        if the leader refuses this broker's credentials."""
        security = self.security
        stream: trio.abc.Stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        try:
            if security.tls:
                stream = trio.SSLStream(stream, security.ssl_context(), server_hostname=endpoint.host)
                await stream.do_handshake()
            if security.sasl:
                await self._authenticate(stream)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def _authenticate(self, stream: trio.abc.Stream) -> None:
        shake = await self._exchange(stream, m.SaslHandshakeRequest(mechanism=self.security.mechanism), 1)
        if shake.error_code:
            raise ConnectionError(f"the leader does not offer SASL {self.security.mechanism}")
        client = SaslClient(self.security)
        token: bytes | None = client.first()
        while token is not None:
            r = await self._exchange(stream, m.SaslAuthenticateRequest(auth_bytes=token), 2)
            if r.error_code:
                raise ConnectionError(f"the leader refused this broker's SASL login: {r.error_message}")
            try:
                token = client.step(bytes(r.auth_bytes))
            except ValueError as e:
                raise ConnectionError(str(e)) from None

    def _request(self) -> tuple[m.FetchRequest, dict[Key, tuple[Partition, int]]]:
        """The next Fetch, and the partitions it asks for with the leader epoch asked in."""
        F = m.FetchRequest
        now = trio.current_time()
        asked: dict[Key, tuple[Partition, int]] = {}
        topics: dict[str, list[m.FetchRequest.FetchTopic.FetchPartition]] = {}
        for key, part in self.partitions.items():
            if self._delayed.get(key, 0) > now or self._checked.get(key) != (part, part.leader_epoch):
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

    async def _fetch_once(self, stream: trio.abc.Stream) -> None:
        await self._truncate_divergent(stream)
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

    async def _truncate_divergent(self, stream: trio.abc.Stream) -> None:
        """For each partition not yet checked in its current epoch: asks the leader where this
        replica's latest epoch ends there, and truncates to that if the log is longer."""
        now = trio.current_time()
        todo = {
            key: (part, part.leader_epoch)
            for key, part in self.partitions.items()
            if self._checked.get(key) != (part, part.leader_epoch) and self._delayed.get(key, 0) <= now
        }
        if not todo:
            return
        Q = m.OffsetForLeaderEpochRequest
        topics: dict[
            str, list[m.OffsetForLeaderEpochRequest.OffsetForLeaderTopic.OffsetForLeaderPartition]
        ] = {}
        for (topic, index), (part, epoch) in todo.items():
            topics.setdefault(topic, []).append(
                Q.OffsetForLeaderTopic.OffsetForLeaderPartition(
                    partition=index, current_leader_epoch=epoch, leader_epoch=part.epochs.latest_epoch
                )
            )
        request = Q(
            replica_id=self.config.node_id,
            topics=[Q.OffsetForLeaderTopic(topic=t, partitions=ps) for t, ps in topics.items()],
        )
        with trio.fail_after(REQUEST_TIMEOUT):
            response = await self._exchange(stream, request, OFFSET_FOR_LEADER_EPOCH_VERSION)
        for t in response.topics:
            for p in t.partitions:
                key = (t.topic, p.partition)
                if key not in todo or self.partitions.get(key) is not todo[key][0]:
                    continue
                part, epoch = todo[key]
                if p.error_code != ec.NONE:
                    self._delay(part, f"OffsetForLeaderEpoch error {ec(p.error_code).name}")
                    continue
                if await self._truncate_to_leader(part, p.leader_epoch, p.end_offset):
                    self._checked[key] = (part, epoch)

    async def _truncate_to_leader(self, part: Partition, leader_epoch: int, end_offset: int) -> bool:
        """Cuts what the leader's answer (``leader_epoch`` ends at ``end_offset`` there, from
        OffsetForLeaderEpoch or a Fetch's ``diverging_epoch``) shows this log has that the
        leader's has not: past where that epoch ends on both. If the follower's log still
        differs, its next fetch's ``last_fetched_epoch`` tells the leader, which answers
        with another divergence (Kafka's KIP-279 rounds). False if truncating failed."""
        if end_offset < 0:  # the leader has no epoch this old: keep what is committed
            target = part.high_watermark
        else:
            target = min(end_offset, part.epochs.end_offset_for(leader_epoch, part.log.end_offset)[1])
            if target < 0:
                target = part.high_watermark
        end = part.log.end_offset
        try:
            if target < end or part.epochs.starts_at_or_after(end):
                await part.truncate_to(min(target, end))
        except TidelogError as e:
            self._delay(part, f"truncation failed: {e}")
            return False
        return True

    def _delay(self, part: Partition, why: str) -> None:
        log.info(
            "replica %s-%d of broker %d's: %s; retrying in %.1fs",
            part.topic,
            part.index,
            self.leader,
            why,
            self.backoff,
        )
        self._delayed[(part.topic, part.index)] = trio.current_time() + self.backoff

    async def _exchange(self, stream: trio.abc.Stream, request: Any, version: int = FETCH_VERSION) -> Any:
        """Sends ``request`` at ``version`` and reads its response."""
        self._correlation += 1
        header = m.RequestHeader(
            request_api_key=request.API_KEY,
            request_api_version=version,
            correlation_id=self._correlation,
            client_id=f"tidelog-replica-{self.config.node_id}",
        )
        await stream.send_all(encode_request(header, request, version))
        (size,) = INT32.unpack(await _receive(stream, 4))
        r = Reader(await _receive(stream, size))
        got = m.ResponseHeader.decode(r, response_header_version(request.API_KEY, version))
        if got.correlation_id != self._correlation:
            raise DecodeError(f"response to request {got.correlation_id}, not {self._correlation}", 0)
        return m.RESPONSES[request.API_KEY].decode(r, version)

    async def _take(
        self, part: Partition, epoch: int, p: m.FetchResponse.FetchableTopicResponse.PartitionData
    ) -> None:
        try:
            if p.error_code == ec.OFFSET_OUT_OF_RANGE and p.log_start_offset > part.log.end_offset:
                # The leader deleted what this replica has not copied yet: restart at its start.
                await part.follow_log_start(p.log_start_offset)
                return
            if p.error_code != ec.NONE:
                if p.error_code == ec.OFFSET_OUT_OF_RANGE:  # past the leader's end: diverged
                    self._checked.pop((part.topic, part.index), None)
                self._delay(part, f"fetch error {ec(p.error_code).name}")
                return
            if p.diverging_epoch.epoch >= 0:
                await self._truncate_to_leader(part, p.diverging_epoch.epoch, p.diverging_epoch.end_offset)
                return
            # The leader may end a response with a partial batch (replica.fetch.max.bytes cut
            # it): the whole ones are appended, the rest is fetched again.
            records = complete_batches(as_view(p.records)) if p.records else b""
            if records:
                await part.append_as_follower(records, self.leader, epoch)
            await part.follow_log_start(min(p.log_start_offset, part.log.end_offset))
        except TidelogError as e:
            self._delay(part, f"could not take what the leader sent: {e}")
            return
        part.follower_high_watermark(p.high_watermark)


async def _receive(stream: trio.abc.Stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise EOFError("the leader closed the connection")
        buf += chunk
    return bytes(buf)
