"""Index lookups agree with a linear scan of the log."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tidelog


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(
        st.tuples(st.integers(1, 6), st.integers(0, 300), st.integers(0, 50)), min_size=1, max_size=60
    ),
    interval=st.sampled_from([0, 64, 512, 4096]),
    data=st.data(),
)
def test_lookup_matches_linear_scan(engine, tmp_path_factory, batches, interval, data):
    path = tmp_path_factory.mktemp("idx") / "p-0"
    with tidelog.Log.open(path, engine=engine, index_interval_bytes=interval, segment_bytes=4000) as log:
        ts = 0
        for count, size, step in batches:
            ts += step
            log.append([(None, b"x" * size)] * count, timestamp=ts)
        everything = list(log.records())
        assert [r.offset for r in everything] == list(range(log.end_offset))
        for target in data.draw(st.lists(st.integers(0, log.end_offset - 1), min_size=1, max_size=20)):
            assert log.read(target, max_records=1)[0] == everything[target]
        for when in data.draw(st.lists(st.integers(-1, ts + 1), min_size=1, max_size=10)):
            expect = next(((r.offset, r.timestamp) for r in everything if r.timestamp >= when), None)
            assert log.offset_for_time(when) == expect


def test_index_lookup_returns_a_batch_start_at_or_below_the_target(open_log, tmp_path):
    log = open_log(index_interval_bytes=200, segment_bytes=3000)
    for i in range(100):
        log.append([(None, b"x" * 60)] * 2, timestamp=i)
    hits = 0
    for target in range(0, 200, 7):
        seg, entry, position = log.index_lookup(target)
        assert seg == max(b for b in log.segments if b <= target)
        data = (tmp_path / "t-0" / f"{seg:020d}.log").read_bytes()
        if position == 0:
            assert entry == seg  # no entry at or below the target: scan from the start
            continue
        hits += 1
        base = int.from_bytes(data[position : position + 8], "big")
        last_delta = int.from_bytes(data[position + 23 : position + 27], "big")
        assert base + last_delta == entry <= target  # entry = last offset of the batch there
    assert hits > 10
