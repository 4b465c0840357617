"""The broker's transport and clock as components: it serves any Trio listener (here an
in-memory one: no socket, so record bytes are copied rather than sent by sendfile), several
named listeners at once, each advertising its own address, and it reads time from the clock
it is given (a test moves it to expire a group member without waiting)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio
import trio.testing

from tidelog.broker import Broker, BrokerConfig
from tidelog.broker.clock import ManualClock
from tidelog.broker.config import Endpoint
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.records import build_batch, decode_batches

from .conftest import poll_until
from .wire import Wire, decode_response, fetch_request, join_request, request_frame


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Hands the broker one end of an in-memory stream pair per ``connect()``."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](1)

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self._receive.close()
        await trio.lowlevel.checkpoint()


class MemoryClient:
    """One request at a time over an in-memory stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.correlation = 0

    async def request(self, body: Any, version: int) -> Any:
        self.correlation += 1
        await self.stream.send_all(request_frame(body, version, self.correlation))
        with trio.fail_after(10):
            while len(self.buf) < 4 or len(self.buf) < 4 + struct.unpack_from(">i", self.buf)[0]:
                data = await self.stream.receive_some()
                assert data, "the broker closed the connection"
                self.buf += data
        (size,) = struct.unpack_from(">i", self.buf)
        frame = bytes(self.buf[4 : 4 + size])
        del self.buf[: 4 + size]
        correlation_id, response = decode_response(frame, body, version)
        assert correlation_id == self.correlation
        return response


def test_a_broker_serves_an_in_memory_listener_copying_record_bytes(tmp_path):
    """Everything a client does works over a stream without a socket: the fetch's record
    bytes, which a socket would get by sendfile, arrive copied and intact."""
    values = [f"value-{i}".encode() for i in range(50)]

    async def main() -> list[bytes]:
        listener = MemoryListener()
        endpoint = Endpoint("MEMORY", "memory.invalid", 9092)
        broker = Broker(BrokerConfig(data_dir=str(tmp_path)), node_id=3)
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.serve, [(endpoint, listener)])
            c = MemoryClient(await listener.connect())
            versions = await c.request(
                m.ApiVersionsRequest(client_software_name="memory-test", client_software_version="1.0"), 3
            )
            assert versions.error_code == ec.NONE
            T = m.CreateTopicsRequest.CreatableTopic
            created = await c.request(
                m.CreateTopicsRequest(
                    topics=[T(name="mem", num_partitions=1, replication_factor=1)], timeout_ms=5000
                ),
                5,
            )
            assert created.topics[0].error_code == ec.NONE
            meta = await c.request(m.MetadataRequest(topics=None), 9)
            assert [(b.node_id, b.host, b.port) for b in meta.brokers] == [(3, "memory.invalid", 9092)]
            P = m.ProduceRequest
            batch = build_batch([(None, v) for v in values], base_offset=0)
            produced = await c.request(
                P(
                    acks=-1,
                    timeout_ms=5000,
                    topic_data=[
                        P.TopicProduceData(
                            name="mem",
                            partition_data=[P.TopicProduceData.PartitionProduceData(index=0, records=batch)],
                        )
                    ],
                ),
                9,
            )
            assert produced.responses[0].partition_responses[0].error_code == ec.NONE
            fetched = await c.request(fetch_request("mem", 0, 0, 0), 12)
            data = fetched.responses[0].partitions[0]
            assert data.error_code == ec.NONE
            broker.shutdown()
        return [r.value for r in decode_batches(bytes(data.records))]

    assert trio.run(main) == values


def test_each_named_listener_advertises_its_own_address(tmp_path):
    """Two listeners at once (``listeners``), each with its advertised address
    (``advertised.listeners``): Metadata answers with the address of the listener the request
    came in on, as Kafka does."""
    config = BrokerConfig.from_settings(
        {
            "listeners": "CLIENT://127.0.0.1:0,REPLICATION://127.0.0.1:0",
            "advertised.listeners": "CLIENT://clients.example:19092",
            "listener.security.protocol.map": "CLIENT:PLAINTEXT,REPLICATION:PLAINTEXT",
        },
        data_dir=str(tmp_path),
    )
    with Broker(config).run_in_thread() as b:
        client, replication = b.broker.endpoints
        assert (client.name, replication.name) == ("CLIENT", "REPLICATION")
        assert client.port and replication.port and client.port != replication.port
        answers = {}
        for e in (client, replication):
            w = Wire(f"127.0.0.1:{e.port}")
            try:
                meta = w.request(m.MetadataRequest(topics=[]), 9)
            finally:
                w.close()
            answers[e.name] = [(b.host, b.port) for b in meta.brokers]
        assert answers == {
            "CLIENT": [("clients.example", 19092)],
            "REPLICATION": [("127.0.0.1", replication.port)],
        }


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"listeners": "SECURE://127.0.0.1:0"}, "no security protocol"),
        ({"listeners": "SSL://127.0.0.1:0"}, "ssl.certificate.location is not set"),
        ({"listeners": "A://127.0.0.1:0,A://127.0.0.1:0"}, "twice"),
        ({"listener.security.protocol.map": "A:TLS"}, "PROTOCOL one of"),
    ],
)
def test_listeners_that_cannot_be_served_are_refused_by_name(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        Broker(BrokerConfig.from_settings(settings), data_dir=str(tmp_path)).config.endpoints()


def test_the_group_coordinator_reads_the_brokers_clock(tmp_path):
    """A member that stops heartbeating is removed once its session timeout has passed on the
    broker's clock: moving a ManualClock on expires it at the next sweep, well before the
    30 s session would pass in real time."""
    clock = ManualClock()
    config = BrokerConfig.from_settings(
        {"group.initial.rebalance.delay.ms": "0"}, port=0, data_dir=str(tmp_path)
    )
    with Broker(config, clock=clock).run_in_thread() as b:
        w = Wire(b.bootstrap)

        def join(member_id: str) -> Any:
            return w.request(join_request("clocked", member_id, 30_000, 30_000), 7)

        try:
            first = join("")
            assert first.error_code == ec.MEMBER_ID_REQUIRED
            joined = join(first.member_id)
            assert joined.error_code == ec.NONE
            S = m.SyncGroupRequest
            synced = w.request(
                S(
                    group_id="clocked",
                    generation_id=joined.generation_id,
                    member_id=first.member_id,
                    protocol_type="consumer",
                    protocol_name="range",
                    assignments=[S.SyncGroupRequestAssignment(member_id=first.member_id, assignment=b"")],
                ),
                5,
            )
            assert synced.error_code == ec.NONE
            group = b.broker.groups.groups["clocked"]
            assert group.state == "Stable" and list(group.members) == [first.member_id]
            clock.advance(31)
            poll_until(lambda: not group.members, "the member to expire on the moved clock", timeout=10)
            assert group.state == "Empty"
        finally:
            w.close()
