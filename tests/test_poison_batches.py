"""Poison batches: a valid CRC over records that do not parse, a body that does not
decompress, an unknown codec. They are refused as Kafka's LogValidator refuses them
(CORRUPT_MESSAGE or INVALID_RECORD), nothing of the request is stored, and consumers keep
reading. Both engines; the wire part with a real broker and a real consumer."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from tidelog._crc32c import crc32c
from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import CorruptRecordError, InvalidRecordError
from tidelog.pytest_plugin import start_broker
from tidelog.records import HEADER_LEN, Compression, build_batch

from .kafka_clients import consume, create_topic
from .wire import Wire, produce_raw


def good(n: int = 3, compression: Compression = Compression.NONE) -> bytearray:
    return bytearray(build_batch([(b"k%d" % i, b"v%d" % i) for i in range(n)], compression=compression))


def sealed(batch: bytearray) -> bytes:
    """The batch with its length field and CRC made right again, as a malicious or buggy
    client would send it: only the records inside are wrong."""
    struct.pack_into(">i", batch, 8, len(batch) - 12)
    struct.pack_into(">I", batch, 17, crc32c(memoryview(batch)[21:]))
    return bytes(batch)


def garbage_records() -> bytes:
    b = good()
    return sealed(b[:HEADER_LEN] + b"\x7f" * 12)


def offset_delta_out_of_order() -> bytes:
    b = good()
    # First record: length, attributes, timestamp delta 0, then its offset delta (varint 0).
    assert b[HEADER_LEN + 3] == 0
    b[HEADER_LEN + 3] = 10  # zigzag varint 5
    return sealed(b)


def bytes_after_the_last_record() -> bytes:
    return sealed(good() + b"\x00\x00\x00")


def more_records_claimed_than_present() -> bytes:
    b = good(3)
    struct.pack_into(">i", b, 23, 3)  # lastOffsetDelta
    struct.pack_into(">i", b, 57, 4)  # recordsCount
    return sealed(b)


def body_not_gzip() -> bytes:
    b = good()
    struct.pack_into(">h", b, 21, Compression.GZIP)
    return sealed(b)


def unknown_codec() -> bytes:
    b = good()
    struct.pack_into(">h", b, 21, 7)
    return sealed(b)


def truncated_zstd() -> bytes:
    b = good(50, Compression.ZSTD)
    return sealed(b[:-8])


POISON: dict[str, tuple[Callable[[], bytes], int]] = {
    "garbage records": (garbage_records, ec.INVALID_RECORD),
    "offset delta out of order": (offset_delta_out_of_order, ec.INVALID_RECORD),
    "bytes after the last record": (bytes_after_the_last_record, ec.INVALID_RECORD),
    "more records claimed than present": (more_records_claimed_than_present, ec.INVALID_RECORD),
    "body not gzip": (body_not_gzip, ec.CORRUPT_MESSAGE),
    "unknown codec 7": (unknown_codec, ec.CORRUPT_MESSAGE),
    "truncated zstd": (truncated_zstd, ec.CORRUPT_MESSAGE),
}


@pytest.mark.parametrize("case", list(POISON))
def test_the_log_refuses_a_poison_batch_and_keeps_nothing_of_the_request(open_log, case):
    build, code = POISON[case]
    log = open_log()
    log.append_batches(good())
    before = log.end_offset
    with pytest.raises((CorruptRecordError, InvalidRecordError)) as e:
        log.append_batches(good() + build())  # a good batch first: all or nothing
    assert e.value.error_code == code
    assert e.value.batch_index == 1
    assert e.value.position == len(good())
    assert log.end_offset == before
    assert [r.offset for r in log.records(0)] == list(range(before))


def test_valid_batches_of_every_codec_still_pass(open_log):
    log = open_log()
    for codec in Compression:
        log.append_batches(good(20, codec))
    assert log.end_offset == 20 * len(Compression)


def test_the_broker_answers_poison_with_kafka_codes_and_consumers_keep_reading(tmp_path, engine):
    broker = start_broker(tmp_path / "b", engine)
    try:
        create_topic("confluent-kafka", broker.bootstrap, "p", 1)
        w = Wire(broker.bootstrap)
        assert produce_raw(w, "p", bytes(good()))[0] == ec.NONE
        for case, (build, code) in POISON.items():
            assert produce_raw(w, "p", build())[0] == code, case
        assert produce_raw(w, "p", bytes(good()))[0] == ec.NONE
        w.close()
        got = consume("confluent-kafka", broker.bootstrap, "p", 1, expected=6)
        assert [(off, v) for _, off, _, v in got] == [(i, b"v%d" % (i % 3)) for i in range(6)]
    finally:
        broker.stop()
