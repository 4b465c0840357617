"""Appends and reads on each engine: records, headers, timestamps, limits, errors."""

from __future__ import annotations

import pytest

import tidelog
from tidelog.errors import LogClosedError, LogLockedError, OffsetOutOfRangeError, RecordTooLargeError


def test_append_returns_base_offsets_and_reads_back(open_log):
    log = open_log()
    assert (log.start_offset, log.end_offset) == (0, 0)
    assert log.read(0) == []
    assert log.append([(b"k1", b"v1"), (None, b"v2")], timestamp=1000) == 0
    assert log.append([(b"k3", None, [("h", b"x"), ("n", None)])], timestamp=2000) == 2
    got = log.read(0)
    assert got == [
        tidelog.Record(0, 1000, b"k1", b"v1", ()),
        tidelog.Record(1, 1000, None, b"v2", ()),
        tidelog.Record(2, 2000, b"k3", None, (("h", b"x"), ("n", None))),
    ]
    assert log.end_offset == 3
    assert [r.offset for r in log.read(1)] == [1, 2]  # records before `offset` in a batch are skipped


def test_record_items_keep_their_timestamps_and_str_is_utf8(open_log):
    log = open_log()
    log.append([tidelog.Record(99, 5, "ключ", "värde", (("h", b"1"),)), ("k", "v")], timestamp=7)
    a, b = log.read(0)
    assert (a.offset, a.timestamp, a.key, a.value) == (0, 5, "ключ".encode(), "värde".encode())
    assert (b.timestamp, b.key) == (7, b"k")


def test_bad_items_raise_type_errors_and_append_nothing(open_log):
    log = open_log()
    with pytest.raises(TypeError, match="key must be bytes"):
        log.append([(123, b"v")])
    with pytest.raises(TypeError, match="2, 3 or 5 items"):
        log.append([(b"k",)])
    with pytest.raises(ValueError, match="at least one record"):
        log.append([])
    assert log.end_offset == 0


def test_limits_max_records_and_max_bytes(open_log):
    log = open_log()
    for i in range(10):
        log.append([(None, bytes([i]) * 100)] * 5, timestamp=i)
    assert [r.offset for r in log.read(3, max_records=4)] == [3, 4, 5, 6]
    one_batch = log.read(0, max_bytes=1)  # at least one whole batch
    assert [r.offset for r in one_batch] == [0, 1, 2, 3, 4]
    raw = log.read_raw(0, max_bytes=1)
    assert len(log.read_raw(0, max_bytes=len(raw) * 2 + 1)) == len(raw) * 2
    assert [r.offset for r in log.records()] == list(range(50))
    assert [r.offset for r in log.records(48, max_bytes=1)] == [48, 49]


def test_offsets_outside_the_log_raise_with_the_range(open_log):
    log = open_log()
    log.append([(None, b"x")] * 3)
    with pytest.raises(OffsetOutOfRangeError) as e:
        log.read(4)
    assert (e.value.offset, e.value.start_offset, e.value.end_offset) == (4, 0, 3)
    assert e.value.error_code == 1
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1)
    assert log.read(3) == []


def test_oversized_batch_is_refused(open_log):
    log = open_log(max_message_bytes=200)
    with pytest.raises(RecordTooLargeError) as e:
        log.append([(None, b"x" * 500)])
    assert e.value.max_size == 200 and e.value.size > 500
    assert log.end_offset == 0
    log.append([(None, b"x")])
    assert log.end_offset == 1


def test_closed_log_refuses_use_and_reopens(open_log, tmp_path):
    log = open_log()
    log.append([(None, b"x")])
    log.close()
    log.close()
    with pytest.raises(LogClosedError):
        log.append([(None, b"y")])
    again = open_log(tmp_path / "t-0")
    assert again.recovery_report.clean_shutdown
    assert [r.value for r in again.read(0)] == [b"x"]


def test_second_open_of_a_directory_is_locked(open_log, tmp_path):
    open_log()
    with pytest.raises(LogLockedError) as e:
        open_log(tmp_path / "t-0")
    assert e.value.path.endswith("t-0")


def test_invalid_config_names_the_field(engine, tmp_path):
    with pytest.raises(ValueError, match=r"segment\.bytes") as e:
        tidelog.Log.open(tmp_path / "x", engine=engine, segment_bytes=1)
    assert e.value.field == "segment.bytes"
    with pytest.raises(ValueError, match=r"retention\.ms"):
        tidelog.Log.open(tmp_path / "x", engine=engine, config={"retention.ms": "soon"})
    with pytest.raises(ValueError, match="unknown log config"):
        tidelog.Log.open(tmp_path / "x", engine=engine, config={"nonsense": 1})


def test_log_append_time_stamps_the_batch(open_log):
    log = open_log(message_timestamp_type="LogAppendTime")
    log.append([(None, b"a"), (None, b"b")], timestamp=5)
    raw = log.read_raw(0)
    stamped = int.from_bytes(raw[35:43], "big", signed=True)
    assert stamped == 5  # the append's "now"
    assert raw[22] & 0x08
    res = log.append_batches(tidelog.records.build_batch([(None, b"c")], now_ms=1), assign_offsets=True)
    assert res.log_append_time > 1_600_000_000_000
    assert log.read(2)[0].timestamp == res.log_append_time


def test_offset_for_time(open_log):
    log = open_log(index_interval_bytes=50)
    for i in range(20):
        log.append([(None, b"x" * 30), (None, b"y")], timestamp=1000 + i * 10)
    assert log.offset_for_time(0) == (0, 1000)
    assert log.offset_for_time(1055) == (12, 1060)
    assert log.offset_for_time(1190) == (38, 1190)
    assert log.offset_for_time(1191) is None


def test_slice_sends_whole_first_batch_with_sendfile(open_log):
    import socket

    log = open_log()
    log.append([(None, b"a" * 300)], timestamp=1)
    log.append([(None, b"b" * 10)], timestamp=2)
    s = log.slice(0, 10)
    assert s.length == len(log.read_raw(0, 1))  # first whole batch even though max_bytes=10
    a, b = socket.socketpair()
    with a, b:
        sent = 0
        while sent < s.length:
            sent += s.send(a.fileno(), sent)
        got = b.recv(1 << 16)
    assert got == s.read() == log.read_raw(0, 1)
    assert log.slice(log.end_offset, 100) is None


def test_slice_below_a_bound_ends_where_the_batch_holding_it_starts(open_log):
    """What a leader sends consumers: only whole batches below its high watermark."""
    log = open_log(segment_bytes=400, index_interval_bytes=1)
    for i in range(8):  # batches of 3 records: offsets 3i..3i+2, about 120 bytes each
        log.append([(None, b"%d" % i * 20)] * 3, timestamp=i)
    segments = log.segments
    assert len(segments) > 2
    second = segments[1]
    whole = log.slice(second, 1 << 20)
    below = log.slice(second, 1 << 20, max_offset=second + 3)
    assert below.read() == log.read_raw(second, 1)  # one batch: the next holds the bound
    assert log.slice(second, 1 << 20, max_offset=second + 4).length == below.length  # mid-batch bound
    assert log.slice(second, 1 << 20, max_offset=second) is None
    assert log.slice(second + 1, 1 << 20, max_offset=second + 2) is None  # inside one batch
    assert log.slice(second, 1 << 20, max_offset=log.end_offset).length == whole.length
    assert log.slice(second, 1 << 20, max_offset=segments[2] + 3).length == whole.length  # later segment
    assert log.slice(0, 1 << 20, max_offset=log.end_offset + 10).length == log.slice(0, 1 << 20).length


def test_batches_larger_than_the_scan_buffer(open_log, tmp_path):
    log = open_log(max_message_bytes=1 << 20, index_interval_bytes=100)
    big = [(b"k%d" % i, bytes([i]) * 70_000) for i in range(4)]
    for i in range(3):
        log.append(big, timestamp=i)
    assert [r.offset for r in log.read(5, max_bytes=1)] == [5, 6, 7]
    assert log.slice(9, 1).length > 4 * 70_000
    assert log.offset_for_time(2) == (8, 2)
    log.close()
    again = open_log(tmp_path / "t-0", max_message_bytes=1 << 20, index_interval_bytes=100)
    assert [r.value for r in again.records()] == [v for _, v in big] * 3
