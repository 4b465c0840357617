"""The broker at the wire level: ApiVersions rules, idempotent retries, bad input."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidelog.buffers import as_view
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.primitives import DecodeError, Reader
from tidelog.records import build_batch, iter_batches

from .wire import Wire, create_topic, fetch_request, produce_one


def healthy(broker) -> None:
    """A separate, well-behaved client still gets answers."""
    w = Wire(broker.bootstrap)
    try:
        resp = w.request(m.MetadataRequest(topics=None), 1)
        assert resp.brokers[0].port == broker.port
    finally:
        w.close()


def test_api_versions_advertises_floors_and_answers_unknown_versions_with_v0(tidelog_broker):
    w = Wire(tidelog_broker.bootstrap)
    resp = w.request(m.ApiVersionsRequest(client_software_name="tests", client_software_version="1.0"), 3)
    ranges = {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys}
    assert resp.error_code == 0
    assert ranges[0] == (0, 9) and ranges[18] == (0, 4) and ranges[3] == (0, 12)
    assert ranges[23] == (0, 4)  # OffsetForLeaderEpoch
    assert 68 not in ranges and 24 not in ranges  # never advertise what is not implemented
    bad = w.request(m.ApiVersionsRequest(client_software_name="-bad name", client_software_version="1"), 3)
    assert bad.error_code == ec.INVALID_REQUEST
    # A version the broker does not know: answered with a v0 body listing ApiVersions' range.
    header = m.RequestHeader(request_api_key=18, request_api_version=99, correlation_id=7, client_id="x")
    body = bytes(header.encode(1).buf)
    w.send_raw(struct.pack(">i", len(body)) + body)
    frame = w.read_frame()
    assert frame is not None and struct.unpack(">i", frame[:4])[0] == 7
    v0 = m.ApiVersionsResponse.decode(frame[4:], 0)
    assert v0.error_code == ec.UNSUPPORTED_VERSION and [(k.api_key, k.max_version) for k in v0.api_keys] == [
        (18, 4)
    ]
    w.close()


def produce_request(topic: str, batch: bytes, acks: int = -1) -> m.ProduceRequest:
    P = m.ProduceRequest
    return P(
        acks=acks,
        timeout_ms=5000,
        topic_data=[
            P.TopicProduceData(
                name=topic, partition_data=[P.TopicProduceData.PartitionProduceData(index=0, records=batch)]
            )
        ],
    )


def test_retried_idempotent_batch_is_acknowledged_once(tidelog_broker):
    w = Wire(tidelog_broker.bootstrap)
    w.request(
        m.CreateTopicsRequest(
            topics=[
                m.CreateTopicsRequest.CreatableTopic(name="idem", num_partitions=1, replication_factor=1)
            ],
            timeout_ms=5000,
        ),
        5,
    )
    pid = w.request(m.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60000), 4)
    assert pid.error_code == 0 and pid.producer_id >= 0
    ident = dict(producer_id=pid.producer_id, producer_epoch=pid.producer_epoch)

    def send(seq: int, n: int) -> tuple[int, int]:
        batch = build_batch([(b"k", b"v%d" % i) for i in range(n)], base_sequence=seq, now_ms=1, **ident)
        part = w.request(produce_request("idem", batch), 9).responses[0].partition_responses[0]
        return part.error_code, part.base_offset

    assert send(0, 3) == (0, 0)
    assert send(3, 2) == (0, 3)
    assert send(3, 2) == (0, 3)  # the retry: same offsets, not appended again
    assert send(9, 1)[0] == ec.OUT_OF_ORDER_SEQUENCE_NUMBER  # a gap
    assert send(5, 1) == (0, 5)
    lo = w.request(
        m.ListOffsetsRequest(
            replica_id=-1,
            topics=[
                m.ListOffsetsRequest.ListOffsetsTopic(
                    name="idem",
                    partitions=[
                        m.ListOffsetsRequest.ListOffsetsTopic.ListOffsetsPartition(
                            partition_index=0, timestamp=-1
                        )
                    ],
                )
            ],
        ),
        7,
    )
    assert lo.topics[0].partitions[0].offset == 6
    L = m.ListOffsetsRequest

    def list_offset(timestamp: int) -> tuple[int, int]:
        r = w.request(
            L(
                replica_id=-1,
                topics=[
                    L.ListOffsetsTopic(
                        name="idem",
                        partitions=[
                            L.ListOffsetsTopic.ListOffsetsPartition(partition_index=0, timestamp=timestamp)
                        ],
                    )
                ],
            ),
            7,
        )
        p = r.topics[0].partitions[0]
        return p.offset, p.timestamp

    assert list_offset(-2) == (0, -1)  # earliest
    assert list_offset(-3) == (0, 1)  # max timestamp: every record here has timestamp 1
    assert list_offset(2) == (-1, -1)  # no record at or after timestamp 2
    w.close()


def test_corrupt_and_oversized_batches_get_error_codes(tidelog_broker):
    w = Wire(tidelog_broker.bootstrap)
    good = build_batch([(None, b"x")], now_ms=1)
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    part = w.request(produce_request("errs", bytes(bad)), 9).responses[0].partition_responses[0]
    assert part.error_code == ec.CORRUPT_MESSAGE
    big = build_batch([(None, b"x" * 2_000_000)], now_ms=1)
    part = w.request(produce_request("errs", big), 9).responses[0].partition_responses[0]
    assert part.error_code == ec.MESSAGE_TOO_LARGE
    part = w.request(produce_request("errs", good), 9).responses[0].partition_responses[0]
    assert (part.error_code, part.base_offset) == (0, 0)
    old = w.request(produce_request("errs", good), 2).responses[0].partition_responses[0]
    assert old.error_code == ec.UNSUPPORTED_VERSION
    w.request(produce_request("errs", good, acks=0), 9, expect_response=False)  # fine: no answer
    w.request(produce_request("errs", bytes(bad), acks=0), 9, expect_response=False)
    assert w.closed_by_peer()  # a failed acks=0 produce has no response to carry the error
    w.close()
    healthy(tidelog_broker)


@pytest.mark.parametrize(
    "frame",
    [
        os.urandom(64),  # random bytes (a random size prefix)
        struct.pack(">i", -5),  # negative length
        struct.pack(">i", 1 << 30),  # over socket.request.max.bytes
        struct.pack(">i", 3) + b"\x00\x03\x00",  # shorter than a request header
        struct.pack(">i", 12) + struct.pack(">hhi", 999, 0, 1) + b"\x00\x00",  # unknown api key
        struct.pack(">i", 12) + struct.pack(">hhi", 3, 99, 1) + b"\x00\x00",  # unsupported version
        struct.pack(">i", 20) + struct.pack(">hhih", 3, 1, 1, 100) + b"abcdefgh",  # lying string length
    ],
    ids=["random", "negative", "oversized", "short-header", "unknown-key", "bad-version", "lying-length"],
)
def test_bad_frames_close_only_that_connection(tidelog_broker, frame, caplog):
    caplog.set_level("WARNING", logger="tidelog.broker")
    bad = Wire(tidelog_broker.bootstrap, timeout=15)
    bad.send_raw(frame)
    declared = struct.unpack(">i", frame[:4])[0]
    if len(frame) - 4 < declared <= 100 << 20:
        bad.sock.shutdown(socket.SHUT_WR)  # a random size prefix: the broker waits for the rest
    assert bad.closed_by_peer()
    bad.close()
    healthy(tidelog_broker)
    warnings = [r for r in caplog.records if r.name == "tidelog.broker" and r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_truncated_frame_then_hang_up(tidelog_broker):
    w = Wire(tidelog_broker.bootstrap)
    req = m.MetadataRequest(topics=None)
    header = m.RequestHeader(request_api_key=3, request_api_version=1, correlation_id=1, client_id="t")
    data = bytes(header.encode(1).buf) + bytes(req.encode(1).buf)
    w.send_raw(struct.pack(">i", len(data) + 10) + data)
    w.sock.shutdown(1)
    assert w.read_frame() is None
    healthy(tidelog_broker)


REQUEST_CLASSES = sorted(m.REQUESTS.values(), key=lambda c: c.API_KEY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(REQUEST_CLASSES), version=st.integers(0, 20), data=st.binary(max_size=200))
def test_request_decoder_fuzz(cls, version, data):
    """Arbitrary bytes decode to a message or raise DecodeError; nothing else escapes."""
    version = min(version, cls.VALID_VERSIONS[1])
    with contextlib.suppress(DecodeError):
        cls.decode(Reader(data), version)


def test_metadata_for_an_illegal_topic_name(tidelog_broker):
    w = Wire(tidelog_broker.bootstrap)
    resp = w.request(
        m.MetadataRequest(
            topics=[m.MetadataRequest.MetadataRequestTopic(name="bad name!")], allow_auto_topic_creation=True
        ),
        12,
    )
    assert resp.topics[0].error_code == ec.INVALID_TOPIC_EXCEPTION
    resp = w.request(
        m.MetadataRequest(
            topics=[m.MetadataRequest.MetadataRequestTopic(name="fine")], allow_auto_topic_creation=False
        ),
        12,
    )
    assert resp.topics[0].error_code == ec.UNKNOWN_TOPIC_OR_PARTITION
    w.close()


def test_idle_connections_are_closed(tmp_path):
    from tidelog.pytest_plugin import start_broker

    broker = start_broker(tmp_path / "idle", **{"connections.max.idle.ms": "300"})
    try:
        w = Wire(broker.bootstrap, timeout=10)
        assert w.request(m.MetadataRequest(topics=None), 1).brokers  # in use: answered
        assert w.closed_by_peer()  # then idle past connections.max.idle.ms: closed
        w.close()
        healthy(broker)
    finally:
        broker.stop()


def test_shutdown_answers_requests_in_flight_then_closes(tmp_path):
    import threading

    from tidelog.pytest_plugin import start_broker

    broker = start_broker(tmp_path / "drain")
    w = Wire(broker.bootstrap, timeout=20)
    w.request(
        m.CreateTopicsRequest(
            topics=[
                m.CreateTopicsRequest.CreatableTopic(name="quiet", num_partitions=1, replication_factor=1)
            ],
            timeout_ms=5000,
        ),
        5,
    )
    long_poll = fetch_request("quiet", 0, 0, max_wait_ms=1500)
    w.request(long_poll, 12, expect_response=False)  # waits up to 1.5 s for data that never comes
    idle = Wire(broker.bootstrap, timeout=20)
    idle.request(m.MetadataRequest(topics=None), 1)
    stopper = threading.Thread(target=broker.stop)
    stopper.start()
    assert idle.closed_by_peer()  # an idle connection is closed at once
    frame = w.read_frame()
    assert frame is not None  # the long poll in flight still gets its answer
    assert w.closed_by_peer()  # and then the connection closes
    stopper.join(30)
    assert not stopper.is_alive()
    w.close()
    idle.close()


def test_log_append_time_delete_records_and_describe_cluster(tidelog_broker):
    w = Wire(tidelog_broker.bootstrap)
    C = m.CreateTopicsRequest
    made = w.request(
        C(
            topics=[
                C.CreatableTopic(
                    name="lat",
                    num_partitions=1,
                    replication_factor=1,
                    configs=[
                        C.CreatableTopic.CreatableTopicConfig(
                            name="message.timestamp.type", value="LogAppendTime"
                        )
                    ],
                )
            ],
            timeout_ms=5000,
        ),
        5,
    )
    assert made.topics[0].error_code == 0
    batch = build_batch([(None, b"v%d" % i) for i in range(10)], now_ms=1)
    part = w.request(produce_request("lat", batch), 9).responses[0].partition_responses[0]
    assert part.error_code == 0 and part.log_append_time_ms > 1_600_000_000_000  # stamped by the broker
    D = m.DeleteRecordsRequest
    deleted = w.request(
        D(
            timeout_ms=5000,
            topics=[
                D.DeleteRecordsTopic(
                    name="lat",
                    partitions=[D.DeleteRecordsTopic.DeleteRecordsPartition(partition_index=0, offset=5)],
                )
            ],
        ),
        2,
    )
    assert deleted.topics[0].partitions[0].low_watermark == 5
    fetched = w.request(fetch_request("lat", 0, 2, max_wait_ms=0), 12)
    p = fetched.responses[0].partitions[0]
    assert (p.error_code, p.log_start_offset, p.high_watermark) == (ec.OFFSET_OUT_OF_RANGE, 5, 10)
    cluster = w.request(m.DescribeClusterRequest(), 1)
    assert cluster.error_code == 0 and [b.port for b in cluster.brokers] == [tidelog_broker.port]
    w.close()


def test_every_advertised_api_answers_its_lowest_and_highest_version(tidelog_broker):
    """A default (empty) request of every advertised version gets an answer, not a closed
    connection: no handler fails on the shape of any version."""
    from tidelog.broker.apis import ADVERTISED

    for key, (lo, hi) in sorted(ADVERTISED.items()):
        for version in sorted({lo, hi}):
            body = m.REQUESTS[key]()
            if key == 0:
                body.acks = -1  # acks=0 would get no response by design
            w = Wire(tidelog_broker.bootstrap)
            try:
                assert w.request(body, version) is not None, (key, version)
            finally:
                w.close()


def test_handlers_register_once_and_the_advertised_table_is_theirs():
    """ApiVersions is derived from the handlers' own registrations: every handled key is
    advertised with its range, nothing else is, and a key cannot be registered twice."""
    from tidelog.broker.apis import ADVERTISED, HANDLERS
    from tidelog.broker.apis._registry import handles
    from tidelog.protocol import _messages as m

    assert set(ADVERTISED) == set(HANDLERS)
    assert all(lo <= hi for lo, hi in ADVERTISED.values())
    with pytest.raises(RuntimeError, match="already handled"):
        handles(m.MetadataRequest, 0, 12)(HANDLERS[3])


def test_fetch_v12_answers_a_diverged_last_fetched_epoch_at_once_with_where_to_truncate(tidelog_broker):
    """Kafka's Fetch v12 check: a fetcher whose last fetched epoch this log does not have
    (or whose offset is past where that epoch ends here) gets ``diverging_epoch``, no
    records, and no long poll; one that agrees gets records; -1 means "not given"."""
    w = Wire(tidelog_broker.bootstrap)
    try:
        assert create_topic(w, "epochs", 1) == ec.NONE
        for i in range(10):
            assert produce_one(w, "epochs", b"r%d" % i)[0] == ec.NONE

        def fetch(last_fetched_epoch: int, offset: int, wait_ms: int = 0):
            req = fetch_request("epochs", 0, offset, wait_ms)
            req.min_bytes = 1 << 20  # with a wait, waited in full unless answered at once
            req.topics[0].partitions[0].last_fetched_epoch = last_fetched_epoch
            started = time.monotonic()
            p = w.request(req, 12).responses[0].partitions[0]
            return p, time.monotonic() - started

        for last, offset in ((5, 3), (0, 12)):  # an epoch unknown here; past epoch 0's end
            p, took = fetch(last, offset, 8_000)
            assert (p.error_code, p.diverging_epoch.epoch, p.diverging_epoch.end_offset) == (ec.NONE, 0, 10)
            assert not p.records and took < 4, (took, p)
        for last in (0, -1):
            p, _ = fetch(last, 3)
            assert (p.error_code, p.diverging_epoch.epoch) == (ec.NONE, -1)
            assert next(h.base_offset for h, _ in iter_batches(as_view(p.records))) == 3
    finally:
        w.close()
