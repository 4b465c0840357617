"""Idempotent producers across restarts: the producer state is snapshotted (Kafka's
``<offset>.snapshot`` files) at segment roll and clean shutdown and replayed from there, so a
retried batch is recognised after any restart, even when other producers rolled the segment
and retention deleted the segments that held it; idle producers expire. A damaged batch found
while replaying never stops the broker. Both engines; a real broker process over the wire."""

from __future__ import annotations

import signal
import struct
import time
from pathlib import Path

import pytest

from tidelog._crc32c import crc32c
from tidelog.buffers import as_view
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process
from tidelog.records import build_batch, decode_batches

from .wire import Wire, fetch_request

TOPIC = "idem"


def produce(w: Wire, batch: bytes, partition: int = 0) -> tuple[int, int]:
    """(error code, base offset) of an acks=all produce of one batch."""
    P = m.ProduceRequest
    req = P(
        transactional_id=None,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[
            P.TopicProduceData(
                name=TOPIC,
                partition_data=[P.TopicProduceData.PartitionProduceData(index=partition, records=batch)],
            )
        ],
    )
    resp = w.request(req, 9)
    part = resp.responses[0].partition_responses[0]
    return part.error_code, part.base_offset


def idem_batch(pid: int, seq: int, n: int, size: int = 10, timestamp: int | None = None) -> bytes:
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    return build_batch(
        [(None, b"p%d-%d-" % (pid, seq + i) + b"x" * size) for i in range(n)],
        now_ms=ts,
        producer_id=pid,
        producer_epoch=0,
        base_sequence=seq,
    )


def end_offset(w: Wire) -> int:
    L = m.ListOffsetsRequest
    req = L(
        replica_id=-1,
        isolation_level=0,
        topics=[
            L.ListOffsetsTopic(
                name=TOPIC,
                partitions=[L.ListOffsetsTopic.ListOffsetsPartition(partition_index=0, timestamp=-1)],
            )
        ],
    )
    return w.request(req, 7).topics[0].partitions[0].offset


class Server:
    def __init__(self, data: Path, engine: str, *settings: str) -> None:
        self.data, self.engine, self.settings = data, engine, settings
        self.start()

    def start(self) -> None:
        args = ["--engine", self.engine]
        for s in ("log.segment.bytes=2000", *self.settings):
            args += ["--set", s]
        self.proc, port = serve_process(self.data, *args)
        self.bootstrap = f"127.0.0.1:{port}"

    def stop(self, how: str) -> None:
        self.proc.send_signal(signal.SIGKILL if how == "kill" else signal.SIGTERM)
        assert self.proc.wait(30) == (-signal.SIGKILL if how == "kill" else 0)


@pytest.fixture
def server_factory(tmp_path):
    started: list[Server] = []

    def make(engine: str, *settings: str) -> Server:
        s = Server(tmp_path / "data", engine, *settings)
        started.append(s)
        return s

    yield make
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(30)


@pytest.mark.parametrize("stop", ["clean", "kill"])
def test_a_retried_batch_is_recognised_after_a_restart_and_a_roll(engine, server_factory, stop):
    server = server_factory(engine)
    w = Wire(server.bootstrap)
    code, first = produce(w, idem_batch(7, 0, 5))  # auto-creates the topic
    assert code == ec.NONE
    # Another producer rolls the segment several times.
    for seq in range(0, 200, 10):
        assert produce(w, idem_batch(8, seq, 10, size=40))[0] == ec.NONE
    end = end_offset(w)
    w.close()
    partition_dir = server.data / f"{TOPIC}-0"
    assert len(sorted(partition_dir.glob("*.log"))) > 3
    server.stop(stop)
    server.start()
    w = Wire(server.bootstrap)
    # Producer 7 retries its batch: acknowledged with the original offset, not appended again.
    assert produce(w, idem_batch(7, 0, 5)) == (ec.NONE, first)
    assert end_offset(w) == end
    assert produce(w, idem_batch(7, 5, 5)) == (ec.NONE, end)
    assert produce(w, idem_batch(7, 20, 5))[0] == ec.OUT_OF_ORDER_SEQUENCE_NUMBER
    w.close()


def test_producer_state_survives_retention_and_the_snapshot_is_kafkas_format(engine, server_factory):
    server = server_factory(engine)
    w = Wire(server.bootstrap)
    produce(w, idem_batch(7, 0, 1))
    code, first = produce(w, idem_batch(7, 1, 3))
    assert code == ec.NONE
    for seq in range(0, 200, 10):
        produce(w, idem_batch(8, seq, 10, size=40))
    end = end_offset(w)
    # Retention: every segment holding producer 7's batches is deleted.
    D = m.DeleteRecordsRequest
    req = D(
        topics=[
            D.DeleteRecordsTopic(
                name=TOPIC,
                partitions=[D.DeleteRecordsTopic.DeleteRecordsPartition(partition_index=0, offset=end - 5)],
            )
        ],
        timeout_ms=10_000,
    )
    assert w.request(req, 2).topics[0].partitions[0].error_code == ec.NONE
    w.close()
    server.stop("clean")
    partition_dir = server.data / f"{TOPIC}-0"
    snapshots = sorted(partition_dir.glob("*.snapshot"))
    assert snapshots and int(snapshots[-1].stem) == end
    data = snapshots[-1].read_bytes()
    version, crc, count = struct.unpack_from(">hIi", data)
    assert (version, count) == (1, 2) and crc == crc32c(data[6:])
    entries = {}
    for i in range(count):
        pid, epoch, last_seq, last_offset, delta, _, coord, txn = struct.unpack_from(
            ">qhiqiqiq", data, 10 + 46 * i
        )
        entries[pid] = (epoch, last_seq, last_offset, delta, coord, txn)
    assert entries[7] == (0, 3, first + 2, 2, -1, -1)
    assert len(data) == 10 + 46 * count
    server.start()
    w = Wire(server.bootstrap)
    assert produce(w, idem_batch(7, 1, 3)) == (ec.NONE, first)
    assert produce(w, idem_batch(7, 4, 1)) == (ec.NONE, end)
    w.close()


def test_idle_producers_expire(engine, server_factory):
    server = server_factory(engine, "producer.id.expiration.ms=60000")
    w = Wire(server.bootstrap)
    produce(w, idem_batch(7, 0, 1))
    day_ago = int(time.time() * 1000) - 86_400_000
    assert produce(w, idem_batch(9, 0, 2, timestamp=day_ago))[0] == ec.NONE
    assert produce(w, idem_batch(7, 1, 2))[0] == ec.NONE
    w.close()
    server.stop("clean")
    server.start()
    w = Wire(server.bootstrap)
    # Producer 9 was idle past the expiration: it is unknown now; producer 7 is not.
    assert produce(w, idem_batch(9, 2, 1))[0] == ec.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert produce(w, idem_batch(7, 3, 1))[0] == ec.NONE
    w.close()


@pytest.mark.parametrize("snapshot", ["kept", "deleted"])
def test_a_damaged_active_segment_never_stops_the_broker(engine, server_factory, snapshot):
    server = server_factory(engine, "num.partitions=2")
    w = Wire(server.bootstrap)
    produce(w, idem_batch(7, 0, 1))
    for seq in range(1, 6):
        assert produce(w, idem_batch(7, seq, 1))[0] == ec.NONE
        assert produce(w, idem_batch(8, seq - 1, 1), partition=1)[0] == ec.NONE
    w.close()
    server.stop("clean")
    partition_dir = server.data / f"{TOPIC}-0"
    seg = sorted(partition_dir.glob("*.log"))[-1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0x10  # inside the last batch: its CRC no longer matches
    seg.write_bytes(bytes(data))
    if snapshot == "deleted":
        for f in partition_dir.glob("*.snapshot"):
            f.unlink()
    server.start()
    w = Wire(server.bootstrap)
    # The other partition is served as before; the damaged one takes writes.
    assert produce(w, idem_batch(8, 5, 1), partition=1) == (ec.NONE, 5)
    # With no snapshot, the replay finds the damaged batch (offset 5) and cuts the log there,
    # as recovery after an unclean stop would; with one, nothing is replayed at start.
    assert produce(w, idem_batch(1234, 0, 1)) == (ec.NONE, 5 if snapshot == "deleted" else 6)

    # Either way the damaged batch is never served: data from before the restart is
    # CRC-checked when fetched (the valid batches before it are), data since is sent as is.
    def fetch(offset: int) -> tuple[int, list[int]]:
        part = w.request(fetch_request(TOPIC, 0, offset, 0), 11).responses[0].partitions[0]
        return part.error_code, [r.offset for r in decode_batches(as_view(part.records or b""))]

    if snapshot == "deleted":  # cut at 5, where the new record went
        assert fetch(0) == (ec.NONE, [0, 1, 2, 3, 4, 5])
    else:
        assert fetch(0) == (ec.NONE, [0, 1, 2, 3, 4])
        assert fetch(5) == (ec.CORRUPT_MESSAGE, [])
        assert fetch(6) == (ec.NONE, [6])
    w.close()
