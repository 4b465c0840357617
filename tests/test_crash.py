"""Crash safety: a writer process is SIGKILLed at random moments; every record it reported
flushed survives, no partial batch is ever served, and appends continue."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import tidelog

from .conftest import other
from .crash_writer import SETTINGS, value_for

TRIALS = 50
WRITER = Path(__file__).with_name("crash_writer.py")


def run_until_killed(engine: str, directory: Path, seed: int, reports: int) -> int:
    """Starts the writer, waits for ``reports`` flush reports, SIGKILLs it; returns the last
    reported flushed offset (0 if none)."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), engine, str(directory), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    flushed = 0
    try:
        assert proc.stdout is not None
        for _ in range(reports):
            line = proc.stdout.readline()
            if not line:
                break
            flushed = int(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    return flushed


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX-only")
@pytest.mark.slow
def test_sigkill_loses_no_flushed_record(engine, tmp_path):
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    directory = tmp_path / "crash-0"
    flushed_max = 0
    for trial in range(TRIALS):
        flushed = run_until_killed(engine, directory, rng.randrange(1 << 30), rng.randint(1, 25))
        flushed_max = max(flushed_max, flushed)
        # Reopen alternately with the other engine: recovery must agree across engines.
        reopen_engine = engine if trial % 2 == 0 else other(engine)
        with tidelog.Log.open(directory, engine=reopen_engine, **SETTINGS) as log:
            assert log.end_offset >= flushed_max, f"trial {trial}: flushed records lost"
            records = list(log.records())
            assert [r.offset for r in records] == list(range(log.end_offset))
            for r in records:
                assert r.value == value_for(r.offset) and r.key == b"%d" % r.offset
            end = log.end_offset
            assert log.append([(b"%d" % end, value_for(end))], timestamp=end) == end
            flushed_max = end + 1
