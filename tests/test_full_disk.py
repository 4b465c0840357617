"""A full disk: the broker answers KAFKA_STORAGE_ERROR (never dies of SIGBUS on a sparse
index page), keeps serving what it has, stops cleanly with exit 0, and every acknowledged
record is there after the disk has room again. A real broker process on a small tmpfs,
both engines, produce over the wire."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidelog.error_codes import ErrorCode as ec
from tidelog.pytest_plugin import serve_process

from .conftest import stop_gracefully
from .wire import Wire, produce_one, read_all

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mounts a tmpfs (Linux)")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs, or a skip with the reason where this process may not mount one."""
    mnt = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk: Path) -> None:
    """Takes every free block of the filesystem."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 1):
            try:
                while True:
                    f.write(bytes(chunk))
            except OSError:
                pass


def test_a_full_disk_is_a_storage_error_and_loses_nothing_acknowledged(small_disk, tmp_path, engine):
    """The disk fills up after the partition was created and its first record written: later
    records still fit in the segment's last page, and the first of them needs an offset-index
    entry, in a page of the index that a sparse file would have to allocate now (SIGBUS).
    Then produces fail with KAFKA_STORAGE_ERROR until the broker is stopped."""
    data = small_disk / "data"
    settings = {
        "log.index.size.max.bytes": "65536",
        "log.index.interval.bytes": "50",  # an index entry for every batch after the first
        "offsets.topic.num.partitions": "1",
    }
    args = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    proc, port = serve_process(data, "--engine", engine, *args)
    acked: dict[int, bytes] = {}
    codes: set[int] = set()
    try:
        w = Wire(f"127.0.0.1:{port}")
        code, offset = produce_one(w, "fill", b"first")
        assert code == ec.NONE
        acked[offset] = b"first"
        fill(small_disk)
        for i in range(300):
            value = b"%d" % i * 20
            code, offset = produce_one(w, "fill", value)
            if code == ec.NONE:
                acked[offset] = value
            else:
                codes.add(code)
        assert proc.poll() is None, f"the broker died (exit {proc.returncode})"
        assert codes == {ec.KAFKA_STORAGE_ERROR}, codes
        assert len(acked) > 1
        w.close()
    finally:
        rc = stop_gracefully(proc)
    assert rc == 0, f"a clean stop on a full disk exited {rc}"

    roomy = tmp_path / "copied"
    shutil.copytree(data, roomy)
    proc, port = serve_process(roomy, "--engine", engine)
    try:
        stored = read_all(f"127.0.0.1:{port}", "fill")
        missing = [o for o, v in acked.items() if stored.get(o) != v]
        assert not missing, f"{len(missing)} acknowledged records lost, first at offset {missing[0]}"
    finally:
        assert stop_gracefully(proc) == 0
