"""A minimal blocking Kafka wire client for tests: sends one request, reads its response."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from tidelog.buffers import as_view
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.framing import encode_request, response_header_version
from tidelog.records import build_batch, complete_batches, decode_batches


def fetch_request(topic: str, partition: int, offset: int, max_wait_ms: int) -> Any:
    """A Fetch of one partition from ``offset`` (up to 1 MiB), waiting up to ``max_wait_ms``."""
    F = m.FetchRequest
    part = F.FetchTopic.FetchPartition(partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20)
    return F(
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        topics=[F.FetchTopic(topic=topic, partitions=[part])],
    )


def request_frame(body: Any, version: int, correlation_id: int) -> bytes:
    """A whole request frame for ``body`` at ``version``."""
    header = m.RequestHeader(
        request_api_key=body.API_KEY,
        request_api_version=version,
        correlation_id=correlation_id,
        client_id="tidelog-tests",
    )
    return encode_request(header, body, version)


def decode_response(frame: bytes, body: Any, version: int) -> tuple[int, Any]:
    """(correlation id, response) of a response frame to ``body`` at ``version``."""
    header_version = response_header_version(body.API_KEY, version)
    header = m.ResponseHeader.decode(frame, header_version)
    return header.correlation_id, m.RESPONSES[body.API_KEY].decode(
        frame[4 if header_version == 0 else 5 :], version
    )


def join_request(group: str, member_id: str, session_ms: int = 10_000, rebalance_ms: int = 10_000) -> Any:
    """A JoinGroup of a consumer with one (empty) range subscription."""
    J = m.JoinGroupRequest
    return J(
        group_id=group,
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms,
        member_id=member_id,
        protocol_type="consumer",
        protocols=[J.JoinGroupRequestProtocol(name="range", metadata=b"\0" * 10)],
    )


class Wire:
    def __init__(self, bootstrap: str, timeout: float = 10) -> None:
        host, _, port = bootstrap.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.correlation = 0

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes | None:
        """A whole response frame, or None if the broker closed the connection."""
        head = self._recv_exact(4)
        if head is None:
            return None
        (size,) = struct.unpack(">i", head)
        return self._recv_exact(size)

    def _recv_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def request(self, body: Any, version: int, expect_response: bool = True) -> Any:
        self.correlation += 1
        self.send_raw(request_frame(body, version, self.correlation))
        if not expect_response:
            return None
        frame = self.read_frame()
        assert frame is not None, "broker closed the connection"
        correlation_id, response = decode_response(frame, body, version)
        assert correlation_id == self.correlation
        return response

    def closed_by_peer(self) -> bool:
        """True once the broker has closed this connection (waits up to the socket timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def coordinator(w: Wire, group: str) -> tuple[int, int, str, int]:
    """FindCoordinator for ``group``: (error code, node id, host, port)."""
    r = w.request(m.FindCoordinatorRequest(key_type=0, coordinator_keys=[group]), 4)
    c = r.coordinators[0]
    return c.error_code, c.node_id, c.host, c.port


def create_topic(w: Wire, name: str, partitions: int) -> int:
    """CreateTopics of one topic; its error code."""
    C = m.CreateTopicsRequest
    req = C(
        topics=[C.CreatableTopic(name=name, num_partitions=partitions, replication_factor=1)],
        timeout_ms=30_000,
        validate_only=False,
    )
    return int(w.request(req, 5).topics[0].error_code)


def produce_raw(w: Wire, topic: str, records: bytes, partition: int = 0) -> tuple[int, int]:
    """One acks=1 produce of ready-made batches to one partition: (error code, base offset)."""
    P = m.ProduceRequest
    data = P.TopicProduceData.PartitionProduceData(index=partition, records=records)
    req = P(
        transactional_id=None,
        acks=1,
        timeout_ms=10_000,
        topic_data=[P.TopicProduceData(name=topic, partition_data=[data])],
    )
    part = w.request(req, 8).responses[0].partition_responses[0]
    return part.error_code, part.base_offset


def produce_one(w: Wire, topic: str, value: bytes) -> tuple[int, int]:
    """One acks=1 produce of one record to partition 0: (error code, base offset)."""
    return produce_raw(w, topic, build_batch([(None, value)], now_ms=int(time.time() * 1000)))


def read_all(bootstrap: str, topic: str) -> dict[int, bytes]:
    """Every record of partition 0 (offset -> value), fetched over the wire."""
    w = Wire(bootstrap)
    out: dict[int, bytes] = {}
    offset = 0
    try:
        while True:
            part = w.request(fetch_request(topic, 0, offset, 0), 11).responses[0].partitions[0]
            assert part.error_code == ec.NONE, part.error_code
            records = decode_batches(complete_batches(as_view(part.records or b"")))
            if not records:
                return out
            for rec in records:
                out[rec.offset] = bytes(rec.value)
            offset = records[-1].offset + 1
    finally:
        w.close()
