"""Format interop with independent implementations: kafka-python's and aiokafka's
record-batch builders and readers."""

from __future__ import annotations

import aiokafka.record.default_records as aio
import kafka.record.default_records as kp
import pytest

import tidelog
from tidelog.records import Compression

CODECS = [Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]
ROWS = [
    (
        i,
        1_700_000_000_000 + i,
        b"key-%d" % i if i % 3 else None,
        b"value-%d" % i * (i % 7),
        [("h", b"%d" % i)],
    )
    for i in range(50)
]


def build_with(module, codec: int) -> bytes:
    b = module.DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for offset, ts, key, value, headers in ROWS:
        b.append(offset, timestamp=ts, key=key, value=value, headers=headers)
    return bytes(b.build())


@pytest.mark.parametrize("module", [kp, aio], ids=["kafka-python", "aiokafka"])
@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name.lower())
def test_their_batches_validate_and_read_back(open_log, module, codec):
    log = open_log()
    log.append([(None, b"first")], timestamp=1)
    res = log.append_batches(build_with(module, codec))
    assert (res.first_offset, res.last_offset, res.record_count) == (1, 50, 50)
    got = log.read(1)
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in got] == [
        (o + 1, ts, k, v, h) for o, ts, k, v, h in ROWS
    ]


@pytest.mark.parametrize(
    "reader", [kp.DefaultRecordBatch, aio.DefaultRecordBatch], ids=["kafka-python", "aiokafka"]
)
@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name.lower())
def test_our_batches_decode_with_theirs(open_log, reader, codec):
    log = open_log()
    log.append([(None, b"pad")] * 3, timestamp=5)
    log.append_batches(
        tidelog.records.build_batch(
            [tidelog.Record(0, ts, k, v, tuple(h)) for _, ts, k, v, h in ROWS], compression=codec
        )
    )
    log.append([(b"k", b"v", [("a", None)])], timestamp=9)
    raw = log.read_raw(3, max_bytes=1)
    batch = reader(raw)
    assert batch.validate_crc()
    assert [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch] == [
        (o + 3, ts, k, v, h) for o, ts, k, v, h in ROWS
    ]
    tail = reader(log.read_raw(53))
    assert [(r.offset, r.key, list(r.headers)) for r in tail] == [(53, b"k", [("a", None)])]
