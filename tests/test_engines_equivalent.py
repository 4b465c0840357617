"""Both engines write byte-identical directories, and each reads what the other wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidelog
from tidelog.records import Compression, build_batch

from .conftest import other, tree_bytes

SETTINGS = dict(segment_bytes=2048, index_interval_bytes=100, segment_index_bytes=96)

payloads = st.binary(min_size=0, max_size=120)
record = st.tuples(st.one_of(st.none(), payloads), st.one_of(st.none(), payloads))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.lists(record, min_size=1, max_size=8), st.integers(0, 10**6)),
        st.tuples(st.just("flush")),
        st.tuples(st.just("roll")),
        st.tuples(st.just("truncate"), st.integers(0, 60)),
        st.tuples(st.just("delete_before"), st.integers(0, 60)),
        st.tuples(st.just("start_at"), st.integers(0, 90)),
        st.tuples(st.just("retention"), st.integers(0, 2 * 10**6)),
        st.tuples(st.just("reopen")),
    ),
    max_size=25,
)


def run(engine: str, path: Path, script: list[tuple]) -> list:
    observed = []
    log = tidelog.Log.open(path, engine=engine, retention_bytes=4096, **SETTINGS)
    try:
        for op in script:
            name = op[0]
            if name == "append":
                observed.append(log.append(op[1], timestamp=op[2]))
            elif name == "flush":
                log.flush()
            elif name == "roll":
                log.roll()
            elif name == "truncate":
                log.truncate_to(op[1])
            elif name == "delete_before":
                if op[1] <= log.end_offset:
                    log.delete_records_before(op[1])
            elif name == "start_at":
                log.truncate_fully_and_start_at(op[1])
            elif name == "retention":
                observed.append(log.apply_retention(op[1]))
            elif name == "reopen":
                log.close()
                log = tidelog.Log.open(path, engine=engine, retention_bytes=4096, **SETTINGS)
            observed.append((log.start_offset, log.end_offset, log.segments))
        observed.append(list(log.records()))
    finally:
        log.close()
    return observed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_same_operations_give_identical_bytes(tmp_path_factory, script):
    base = tmp_path_factory.mktemp("eq")
    results = {e: run(e, base / e / "p-0", script) for e in ("rust", "python")}
    assert results["rust"] == results["python"]
    assert tree_bytes(base / "rust") == tree_bytes(base / "python")


def test_each_engine_reads_what_the_other_wrote(engine, tmp_path):
    path = tmp_path / "p-0"
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        for i in range(40):
            log.append([(str(i).encode(), b"v" * i, [("i", str(i).encode())])], timestamp=i)
        log.append_batches(build_batch([(b"z", b"gz")] * 3, compression=Compression.GZIP, now_ms=99))
        written = list(log.records())
        segments = log.segments
    assert len(segments) > 2
    with tidelog.Log.open(path, engine=other(engine), **SETTINGS) as log:
        assert log.recovery_report.clean_shutdown
        assert list(log.records()) == written
        assert log.offset_for_time(20) == (20, 20)
        log.append([(b"after", b"x")], timestamp=1000)
    with tidelog.Log.open(path, engine=engine, **SETTINGS) as log:
        assert [r.key for r in log.records(len(written))] == [b"after"]


def test_unclean_directory_recovers_the_same_on_both(engine, tmp_path):
    path = tmp_path / "p-0"
    log = tidelog.Log.open(path, engine=engine, **SETTINGS)
    for i in range(30):
        log.append([(None, b"x" * 50)], timestamp=i)
    log.flush()
    # Simulate a crash: copy the directory while the log is open (no clean-shutdown flag).
    shutil.copytree(path, tmp_path / "a")
    shutil.copytree(path, tmp_path / "b")
    log.close()
    for name in ("a", "b"):
        (tmp_path / name / ".lock").unlink()
    la = tidelog.Log.open(tmp_path / "a", engine="rust", **SETTINGS)
    lb = tidelog.Log.open(tmp_path / "b", engine="python", **SETTINGS)
    try:
        assert not la.recovery_report.clean_shutdown
        assert la.recovery_report == lb.recovery_report
        assert list(la.records()) == list(lb.records())
    finally:
        la.close()
        lb.close()
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
