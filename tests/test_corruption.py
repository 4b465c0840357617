"""Torn and corrupted files: opening recovers (bad tail cut, indexes rebuilt) and reads return
only valid batches; corruption found later is reported, never served."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest

import tidelog
from tidelog.errors import CorruptRecordError

SEG = "00000000000000000000"
SETTINGS = dict(index_interval_bytes=64)


def build(engine: str, path: Path, batches: int = 12) -> list[tidelog.Record]:
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        for i in range(batches):
            log.append([(b"k%d" % i, b"value-%d" % i * 3, [("n", b"%d" % i)]), (None, b"x")], timestamp=i)
        return list(log.records())


def last_batch_span(path: Path) -> tuple[int, int]:
    data = (path / f"{SEG}.log").read_bytes()
    pos = last = 0
    while pos < len(data):
        last = pos
        pos += 12 + int.from_bytes(data[pos + 8 : pos + 12], "big")
    return last, len(data)


def test_truncating_the_last_batch_at_every_byte_recovers(engine, tmp_path):
    original = tmp_path / "orig-0"
    records = build(engine, original)
    start, end = last_batch_span(original)
    for cut in range(start, end):
        work = tmp_path / "work-0"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(original, work)
        os.truncate(work / f"{SEG}.log", cut)
        with tidelog.Log.open(work, engine=engine, **SETTINGS) as log:
            assert log.recovery_report.bytes_truncated == cut - start
            assert list(log.records()) == records[:-2]
            # The cut batch's offsets were durable (a clean stop): they are not given out again.
            assert log.recovery_report.next_offset_raised_to == records[-1].offset + 1
            assert log.append([(None, b"next")], timestamp=99) == records[-1].offset + 1


def test_flipped_bytes_in_the_last_batch_are_never_served(engine, tmp_path):
    original = tmp_path / "orig-0"
    records = build(engine, original)
    start, end = last_batch_span(original)
    rng = random.Random(7)
    for _ in range(60):
        work = tmp_path / "work-0"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(original, work)
        seg = work / f"{SEG}.log"
        data = bytearray(seg.read_bytes())
        at = rng.randrange(start, end)
        data[at] ^= 1 << rng.randrange(8)
        seg.write_bytes(bytes(data))
        (work / "partition.checkpoint").unlink()  # as after a crash: full recovery
        with tidelog.Log.open(work, engine=engine, **SETTINGS) as log:
            got = list(log.records())
            # Only the partition leader epoch (bytes 12..16) lies outside both CRC and checks.
            if 12 <= at - start < 16:
                assert got == records
            else:
                assert got == records[:-2], f"flip at batch byte {at - start} served"


@pytest.mark.parametrize("damage", ["delete", "zero", "garbage"])
def test_damaged_index_is_rebuilt(engine, tmp_path, damage):
    path = tmp_path / "p-0"
    records = build(engine, path, batches=40)
    index = path / f"{SEG}.index"
    good = index.read_bytes()
    assert len(good) > 16
    if damage == "delete":
        index.unlink()
    elif damage == "zero":
        index.write_bytes(bytes(len(good)))
    else:
        index.write_bytes(bytes(reversed(good)))
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        assert log.recovery_report.segments_recovered == 1
        for r in records:
            assert log.read(r.offset, max_records=1) == [r]
    assert index.read_bytes() == good


def test_corruption_in_a_recovered_segment_is_reported(engine, tmp_path):
    path = tmp_path / "p-0"
    records = build(engine, path, batches=20)
    seg = path / f"{SEG}.log"
    data = bytearray(seg.read_bytes())
    second = 12 + int.from_bytes(data[8:12], "big")
    data[second + 70] ^= 0xFF  # inside the records of batch 1 (offsets 2-3)
    seg.write_bytes(bytes(data))
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        assert log.recovery_report.clean_shutdown  # a clean open does not rescan
        assert log.read(0, max_bytes=1) == records[:2]
        with pytest.raises(CorruptRecordError) as e:
            log.read(2)
        assert e.value.segment == str(seg)
        assert e.value.position == second
        assert e.value.directory == str(path)
        with pytest.raises(CorruptRecordError):
            log.read_raw(3)
        assert log.read(4) == records[4 : 4 + len(log.read(4))]


def test_undecodable_records_with_a_valid_crc_are_reported_at_their_position(engine, tmp_path):
    from tidelog._crc32c import crc32c
    from tidelog.records import HEADER_LEN

    path = tmp_path / "p-0"
    with tidelog.Log.open(path, engine=engine) as log:
        log.append([(None, b"fine")] * 3, timestamp=1)
        first_len = len(log.read_raw(0, 1))
        log.append([(None, b"also fine")] * 2, timestamp=1)
        # Appends refuse such a batch, so damage the stored one: its records section becomes
        # garbage under a CRC made right again (bit rot that a checksum happens to match).
        with open(path / f"{SEG}.log", "r+b") as f:
            f.seek(first_len)
            stored = bytearray(f.read())
            stored[HEADER_LEN:] = b"\x7f" * (len(stored) - HEADER_LEN)
            stored[17:21] = crc32c(memoryview(stored)[21:]).to_bytes(4, "big")
            f.seek(first_len)
            f.write(stored)
        with pytest.raises(CorruptRecordError) as e:
            log.read(3)
        assert e.value.position == first_len
        assert e.value.segment == str(path / f"{SEG}.log")
        assert "record 0" in e.value.reason
