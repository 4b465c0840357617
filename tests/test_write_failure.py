"""A write that fails (EFBIG under RLIMIT_FSIZE) raises, is never partly visible, and the log
reopens with every flushed record."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import tidelog

CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    import tidelog
    from tidelog.errors import StorageError
    engine, path = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    log = tidelog.Log.open(path, engine=engine, segment_index_bytes=4096)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    flushed = 0
    try:
        for i in range(1000):
            log.append([(b"%d" % i, b"v" * 300)], timestamp=i)
            log.flush()
            flushed = log.end_offset
    except StorageError as e:
        print(f"error|{e.errno}|{e.operation}|{flushed}|{log.end_offset}")
        # The failed batch is not visible, and earlier records still read back.
        assert log.end_offset == flushed, (log.end_offset, flushed)
        assert len(list(log.records())) == flushed
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX-only")
def test_efbig_mid_append_surfaces_and_loses_nothing(engine, tmp_path):
    path = tmp_path / "p-0"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, engine, str(path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    words = out.stdout.strip().split("|")
    assert words[:3] == ["error", "27", "append to segment"], out.stdout  # EFBIG
    flushed = int(words[3])
    assert flushed > 10
    with tidelog.Log.open(path, engine=engine, segment_index_bytes=4096) as log:
        records = list(log.records())
        assert [r.key for r in records] == [b"%d" % i for i in range(flushed)]
        assert log.append([(None, b"after")], timestamp=1) == flushed
