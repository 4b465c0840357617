"""Recovery keeps every valid byte: a damaged segment loses only its own bad tail, size limits
never apply to what is stored, missing indexes of any segment are rebuilt, offsets that were
durable are never given out twice, reads return the valid batches before a damaged one, and
each repair is logged. Both engines, and the engines agree on the repaired files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

import tidelog
from tests.conftest import other, tree_bytes
from tidelog.errors import CorruptRecordError

SETTINGS = dict(segment_bytes=2000, index_interval_bytes=64)


def seg_name(base: int, ext: str = ".log") -> str:
    return f"{base:020d}{ext}"


def build(engine: str, path: Path, batches: int = 60) -> list[tidelog.Record]:
    """A cleanly closed log of several segments, two records per batch."""
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        for i in range(batches):
            log.append([(b"k%d" % i, b"v" * 40 + b"%d" % i), (None, b"x")], timestamp=1000 + i)
        assert len(log.segments) >= 4
        return list(log.records())


def segments_of(path: Path) -> list[int]:
    return sorted(int(p.stem) for p in path.glob("*.log"))


def batch_starts(data: bytes) -> list[int]:
    pos, out = 0, []
    while pos < len(data):
        out.append(pos)
        pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "big")
    return out


def offsets(records: list[tidelog.Record]) -> list[int]:
    return [r.offset for r in records]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("stop", ["clean", "unclean"])
def test_a_bad_tail_in_an_inactive_segment_keeps_every_later_segment(engine, tmp_path, damage, stop):
    path = tmp_path / "p-0"
    records = build(engine, path)
    bases = segments_of(path)
    victim = path / seg_name(bases[1])
    data = victim.read_bytes()
    last = batch_starts(data)[-1]
    if damage == "truncated":
        victim.write_bytes(data[: last + 30])
    else:
        victim.write_bytes(data[:last] + b"\xa5" * (len(data) - last))
    if stop == "unclean":
        (path / "partition.checkpoint").unlink()
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        report = log.recovery_report
        assert [t.segment for t in report.truncations] == [bases[1]]
        cut = report.truncations[0]
        assert cut.position == last and cut.bytes == (30 if damage == "truncated" else len(data) - last)
        # Only the damaged batch (2 records) is gone; every later segment is kept and read.
        lost = {cut.next_offset, cut.next_offset + 1}
        assert offsets(list(log.records())) == [o for o in offsets(records) if o not in lost]
        assert log.segments == bases
        # Reads step over the gap to the next segment.
        assert log.read(cut.next_offset, max_records=1)[0].offset == bases[2]
        assert log.append([(None, b"next")], timestamp=5000) == records[-1].offset + 1


def test_recovering_the_same_damage_gives_the_same_files_on_both_engines(engine, tmp_path):
    original = tmp_path / "orig-0"
    build(engine, original)
    bases = segments_of(original)
    victim = original / seg_name(bases[2])
    victim.write_bytes(victim.read_bytes()[:-7])
    (original / seg_name(bases[1], ".index")).unlink()
    (original / "partition.checkpoint").unlink()
    trees = {}
    for name in (engine, other(engine)):
        work = tmp_path / f"{name}-0"
        shutil.copytree(original, work)
        with tidelog.Log.open(work, engine=name, **SETTINGS) as log:
            assert len(log.recovery_report.truncations) == 1
        trees[name] = tree_bytes(work)
    assert trees[engine] == trees[other(engine)]


def test_a_lowered_size_limit_never_cuts_stored_batches(engine, tmp_path):
    path = tmp_path / "p-0"
    with tidelog.Log.open(path, engine=engine) as log:
        log.append([(b"big", b"B" * 300_000)], timestamp=1)
        log.append([(None, b"after-%d" % i) for i in range(200)], timestamp=2)
        want = list(log.records())
    (path / "partition.checkpoint").unlink()  # as after a crash: every batch is rescanned
    with tidelog.Log.open(path, engine=engine, max_message_bytes=1000) as log:
        assert log.recovery_report.bytes_truncated == 0
        assert list(log.records()) == want


@pytest.mark.parametrize("which", [".index", ".timeindex", "both"])
def test_missing_indexes_of_inactive_segments_are_rebuilt(engine, tmp_path, which):
    path = tmp_path / "p-0"
    records = build(engine, path)
    bases = segments_of(path)
    originals = {p.name: p.read_bytes() for p in path.iterdir() if p.suffix in (".index", ".timeindex")}
    for base in bases[:-1]:
        for ext in (".index", ".timeindex") if which == "both" else (which,):
            (path / seg_name(base, ext)).unlink()
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        assert log.recovery_report.segments_recovered == len(bases) - 1
        assert log.recovery_report.bytes_truncated == 0
        for r in records[::7]:
            assert log.read(r.offset, max_records=1) == [r]
    rebuilt = {p.name: p.read_bytes() for p in path.iterdir() if p.suffix in (".index", ".timeindex")}
    assert rebuilt == originals


def test_offsets_that_were_durable_are_not_given_out_again(engine, tmp_path):
    path = tmp_path / "p-0"
    records = build(engine, path)
    bases = segments_of(path)
    # Damage takes the whole last segment: its offsets had been acknowledged.
    (path / seg_name(bases[-1])).write_bytes(b"\0" * 100)
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        assert log.recovery_report.next_offset_raised_to == records[-1].offset + 1
        assert log.end_offset == records[-1].offset + 1
        assert offsets(list(log.records())) == [o for o in offsets(records) if o < bases[-1]]
        assert log.append([(None, b"new")], timestamp=9) == records[-1].offset + 1
    with tidelog.Log.open(path, engine=other(engine), **SETTINGS) as log:
        assert log.recovery_report.clean_shutdown
        assert log.read(records[-1].offset + 1)[0].value == b"new"


def test_truncate_to_is_not_mistaken_for_damage_on_the_next_open(engine, tmp_path):
    path = tmp_path / "p-0"
    records = build(engine, path)
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        log.truncate_to(records[30].offset)
    (path / "partition.checkpoint").unlink()
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        assert log.recovery_report.next_offset_raised_to is None
        assert log.end_offset == records[30].offset


def test_recovery_logs_one_warning_per_damaged_log(engine, tmp_path, caplog):
    path = tmp_path / "p-0"
    build(engine, path)
    bases = segments_of(path)
    victim = path / seg_name(bases[1])
    victim.write_bytes(victim.read_bytes()[:-5])
    caplog.set_level(logging.INFO, logger="tidelog.storage")
    with tidelog.Log.open(path, engine=engine, **SETTINGS):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0] and f"segment {bases[1]}" in warnings[0]
    assert "cut" in warnings[0] and "bytes" in warnings[0]
    caplog.clear()
    with tidelog.Log.open(path, engine=engine, **SETTINGS):
        pass  # nothing left to repair: silent
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


def test_a_read_returns_the_valid_batches_before_a_damaged_one(engine, tmp_path):
    path = tmp_path / "p-0"
    with tidelog.Log.open(path, engine=engine) as log:
        for i in range(6):
            log.append([(None, b"r%d-%d" % (i, j)) for j in range(3)], timestamp=i)
        records = list(log.records())
    seg = path / seg_name(0)
    data = bytearray(seg.read_bytes())
    fourth = batch_starts(bytes(data))[3]
    data[fourth + 70] ^= 0x40  # inside batch 3's records: its CRC no longer matches
    seg.write_bytes(bytes(data))
    with tidelog.Log.open(path, engine=engine) as log:
        assert log.recovery_report.clean_shutdown  # clean: nothing is rescanned
        assert log.read(0) == records[:9]
        assert log.read(4) == records[4:9]
        assert len(log.read_raw(0)) == fourth
        with pytest.raises(CorruptRecordError) as e:
            log.read(9)
        assert e.value.position == fourth
        with pytest.raises(CorruptRecordError):
            log.read_raw(10)
        assert log.read(12) == records[12:]


def test_an_empty_segment_has_an_empty_time_index(engine, tmp_path):
    path = tmp_path / "p-0"
    with tidelog.Log.open(path, engine=engine):
        pass
    assert (path / seg_name(0, ".timeindex")).read_bytes() == b""
    assert (path / seg_name(0, ".index")).read_bytes() == b""
    with tidelog.Log.open(path, engine=other(engine)) as log:
        assert log.recovery_report.clean_shutdown and log.end_offset == 0
