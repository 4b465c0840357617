"""Roll, retention, truncation, delete_records_before, named positions, topics."""

from __future__ import annotations

import os
import shutil

import pytest

import tidelog
from tidelog.errors import OffsetOutOfRangeError
from tidelog.partitioning import murmur2


def fill(log, batches, size=100, ts0=0):
    for i in range(batches):
        log.append([(None, b"x" * size)] * 2, timestamp=ts0 + i)


def test_roll_on_segment_bytes(open_log, tmp_path):
    log = open_log(segment_bytes=1000)
    fill(log, 20)
    segs = log.segments
    assert len(segs) > 3 and segs[0] == 0 and segs == sorted(segs)
    names = sorted(p.name for p in (tmp_path / "t-0").glob("*.log"))
    assert names == [f"{b:020d}.log" for b in segs]
    assert all(p.stat().st_size <= 1000 for p in (tmp_path / "t-0").glob("*.log"))
    log.roll()
    assert log.segments[-1] == log.end_offset
    log.roll()  # no-op on an empty active segment
    assert len(log.segments) == len(segs) + 1


def test_retention_by_size_deletes_oldest_inactive_segments(open_log):
    log = open_log(segment_bytes=1000, retention_bytes=2500)
    fill(log, 40)
    assert log.size_bytes <= 2500 + 1000
    assert log.start_offset == log.segments[0] > 0
    assert next(r.offset for r in log.records()) == log.start_offset
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0)


def test_retention_by_time_uses_the_newest_timestamp_of_a_segment(open_log):
    log = open_log(segment_bytes=1000, retention_ms=100)
    fill(log, 30, ts0=1000)
    before = log.segments
    # Segments whose newest record is older than now - 100 go; the active one stays.
    assert log.apply_retention(now_ms=1000 + 15 + 100) > 0
    after = log.segments
    assert after[-1] == before[-1] and len(after) < len(before)
    assert all(r.timestamp >= 1000 for r in log.records())
    assert log.apply_retention(now_ms=10**12) == len(after) - 1
    assert log.segments == [before[-1]]


def test_truncate_to_cuts_at_batch_boundaries_and_across_segments(open_log):
    log = open_log(segment_bytes=1000)
    fill(log, 30)
    log.truncate_to(61)  # inside the batch [60, 61]: the whole batch goes
    assert log.end_offset == 60
    assert [r.offset for r in log.records()] == list(range(60))
    log.truncate_to(7)
    assert log.end_offset == 6 and log.segments[0] == 0 and max(log.segments) <= 6
    assert log.append([(None, b"again")], timestamp=5) == 6
    log.truncate_to(100)  # beyond the end: no-op
    assert log.end_offset == 7


def test_delete_records_before(open_log, tmp_path):
    log = open_log(segment_bytes=1000)
    fill(log, 30)
    log.delete_records_before(25)
    assert log.start_offset == 25
    assert [r.offset for r in log.read(25, max_records=2)] == [25, 26]
    with pytest.raises(OffsetOutOfRangeError) as e:
        log.read(24)
    assert e.value.start_offset == 25
    assert log.segments[0] <= 25 < (log.segments[1] if len(log.segments) > 1 else 10**9)
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(log.end_offset + 1)
    log.close()
    reopened = open_log(tmp_path / "t-0", segment_bytes=1000)
    assert reopened.start_offset == 25


def test_truncate_below_start_restarts_the_log(open_log):
    log = open_log(segment_bytes=1000)
    fill(log, 30)
    log.delete_records_before(40)
    log.truncate_to(10)
    assert (log.start_offset, log.end_offset, log.segments) == (10, 10, [10])
    assert log.append([(None, b"x")], timestamp=1) == 10


def test_truncate_fully_and_start_at_empties_the_log_and_continues_from_there(open_log, tmp_path):
    """A replica whose leader's log starts past this log's end: everything goes, the log
    starts (and is read) at the new offset, and stays there across a reopen."""
    log = open_log(segment_bytes=1000)
    fill(log, 30)
    log.truncate_fully_and_start_at(500)
    assert (log.start_offset, log.end_offset, log.segments) == (500, 500, [500])
    assert sorted(p.name for p in (tmp_path / "t-0").glob("*.log")) == [f"{500:020d}.log"]
    assert log.append([(None, b"next")], timestamp=1) == 500
    log.close()
    reopened = open_log(tmp_path / "t-0", segment_bytes=1000)
    assert (reopened.start_offset, reopened.end_offset) == (500, 501)
    assert [r.value for r in reopened.records()] == [b"next"]


def test_a_crash_inside_truncate_fully_and_start_at_never_reopens_the_log_below_it(engine, tmp_path):
    """The files a crash leaves between the two steps (the new checkpoint, written first,
    beside the old segments, not yet deleted) reopen as the restarted log: nothing below the
    new start is served again and no offset is given out twice."""
    path, crashed = tmp_path / "t-0", tmp_path / "crashed-0"
    with tidelog.Log.open(path, engine=engine, segment_bytes=1000) as log:
        fill(log, 30)
    shutil.copytree(path, crashed)
    with tidelog.Log.open(path, engine=engine, segment_bytes=1000) as log:
        log.truncate_fully_and_start_at(500)
        shutil.copy(path / "partition.checkpoint", crashed / "partition.checkpoint")
    with tidelog.Log.open(crashed, engine=engine, segment_bytes=1000) as log:
        assert (log.start_offset, log.end_offset) == (500, 500)
        assert log.append([(None, b"next")], timestamp=1) == 500
        assert [(r.offset, r.value) for r in log.records()] == [(500, b"next")]


def test_named_positions_are_durable(open_log, tmp_path):
    log = open_log()
    fill(log, 5)
    assert log.committed("billing") is None
    log.commit("billing", 4)
    log.commit("audit", 10)
    log.commit("billing", 6)
    with pytest.raises(OffsetOutOfRangeError):
        log.commit("billing", 11)
    with pytest.raises(ValueError, match="invalid position name"):
        log.commit("../escape", 1)
    log.close()
    again = open_log(tmp_path / "t-0")
    assert again.positions() == {"audit": 10, "billing": 6}
    pos = again.committed("billing")
    assert [r.offset for r in again.read(pos)] == [6, 7, 8, 9]


def test_flush_policy_by_message_count_advances_recovery_point(open_log):
    log = open_log(flush_messages=4)
    log.append([(None, b"a")] * 2, timestamp=1)
    assert log.recovery_point == 0
    log.append([(None, b"a")] * 2, timestamp=1)
    assert log.recovery_point == 4
    log.append([(None, b"a")], timestamp=1)
    assert log.recovery_point == 4
    log.flush()
    assert log.recovery_point == 5


def test_murmur2_vectors_match_kafka():
    assert murmur2(b"kafka") & 0xFFFFFFFF == 0xD067CF64
    assert murmur2(b"") & 0xFFFFFFFF == 0x106E08D9
    assert murmur2(b"1234") & 0xFFFFFFFF == 0x9FC97B14


def test_topic_places_keys_like_kafka_and_reopens(engine, tmp_path):
    with tidelog.Topic.open(tmp_path / "orders", partitions=4, engine=engine) as topic:
        placed = topic.append([(b"key-%d" % i, b"v%d" % i) for i in range(100)], timestamp=1)
        assert set(placed) <= {0, 1, 2, 3}
        for p in range(4):
            for r in topic.partition(p).records():
                assert (murmur2(r.key) & 0x7FFFFFFF) % 4 == p
        nulls = [next(iter(topic.append([(None, b"n")]))) for _ in range(8)]
        assert sorted(set(nulls)) == [0, 1, 2, 3]  # spread round-robin
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"orders-{p}" for p in range(4)]
    with tidelog.Topic.open(tmp_path / "orders", engine=engine) as topic:
        assert len(topic.partitions) == 4
        assert sum(t.end_offset for t in topic.partitions) == 108
    with pytest.raises(ValueError, match="partitions must be at least 4"):
        tidelog.Topic.open(tmp_path / "orders", partitions=2, engine=engine)
    with pytest.raises(ValueError, match="does not exist"):
        tidelog.Topic.open(tmp_path / "nothing", engine=engine)


def test_engine_selection(monkeypatch, tmp_path):
    monkeypatch.setenv("TIDELOG_ENGINE", "python")
    assert tidelog.engine() == "python"
    with tidelog.Log.open(tmp_path / "a-0") as log:
        assert log.engine == "python"
    monkeypatch.setenv("TIDELOG_ENGINE", "auto")
    assert tidelog.engine() == "rust"
    with pytest.raises(ValueError, match="engine must be"):
        tidelog.Log.open(tmp_path / "b-0", engine="go")


def test_max_timestamp_and_active_segment_bytes(open_log):
    log = open_log(segment_bytes=1000)
    assert log.max_timestamp == -1 and log.active_segment_bytes == 0
    for ts in (50, 900, 20, 900, 10):
        log.append([(None, b"x" * 150)], timestamp=ts)
    assert log.max_timestamp == 900
    assert log.offset_for_time(log.max_timestamp) == (1, 900)  # the first record holding it
    assert 0 < log.active_segment_bytes <= 1000 and len(log.segments) > 1


def test_reconfigure_applies_to_the_open_log(open_log, tmp_path):
    """New limits and roll sizes take effect at once, with nothing reopened; bad settings are
    refused and leave the old ones in force."""
    from tidelog.errors import RecordTooLargeError

    log = open_log(segment_bytes=1 << 20)
    log.append([(b"k", b"x" * 3000)])
    log.reconfigure(segment_bytes=600, max_message_bytes=2000)
    assert log.config.segment_bytes == 600
    with pytest.raises(RecordTooLargeError) as e:
        log.append([(b"k", b"x" * 3000)])
    assert e.value.max_size == 2000
    for i in range(10):
        log.append([(b"k", b"v%d" % i * 20)])
    assert len(log.segments) >= 3  # the big first segment, then 600-byte ones
    with pytest.raises(ValueError):
        log.reconfigure(segment_bytes=1)
    assert log.config.segment_bytes == 600
    assert [r.offset for r in log.records(0)] == list(range(11))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_descriptors_do_not_grow_with_segments(open_log, tmp_path):
    """Older segments hold no descriptor: their files are opened for each read (as Kafka
    loads old segments' indexes lazily), so thousands of partitions stay within the
    open-files limit whatever their segment counts."""

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    log = open_log(segment_bytes=500)
    log.append([(b"k", b"v" * 100)] * 2)
    log.append([(b"k", b"v" * 100)] * 2)
    few = open_fds() - before
    for _ in range(60):
        log.append([(b"k", b"v" * 100)] * 2)
    assert len(log.segments) > 40
    assert open_fds() - before == few
    assert [r.offset for r in log.records(0)] == list(range(124))
    slices = [log.slice(o, 300) for o in (0, 50, 100)]
    assert all(s.length > 0 for s in slices)
    del slices
    assert open_fds() - before == few
