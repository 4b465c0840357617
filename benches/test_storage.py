"""Storage-core benchmarks: each operation on the Rust engine, the pure-Python engine, and a
"limit" (what the machine does with the same bytes without tidelog), in the same run.

    python -m pytest benches --benchmark-json=.benchmarks/storage.json
    python -m benches.report .benchmarks/storage.json
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
from pathlib import Path

import crc32c
import pytest

import tidelog
from tidelog import _core
from tidelog.storage import batch as pybatch

from .conftest import batch_of, size

IMPLS = ["rust", "python", "limit"]
READ_CHUNK = 4 << 20
counter = itertools.count()


def fresh(bench_dir: Path, name: str) -> Path:
    return bench_dir / f"{name}-{next(counter)}" / "p-0"


def units(benchmark, n: int, unit: str) -> None:
    benchmark.extra_info.update(units=n, unit=unit)


# 1. validate + assign offsets over 16 KiB batches; limit: CRC-32C (crc32c package) of the bytes
@pytest.mark.benchmark(group="validate+assign 16 KiB batches")
@pytest.mark.parametrize("impl", IMPLS)
def test_validate_assign(benchmark, impl):
    one = batch_of(140, 100)  # ~16 KiB
    mib = size(64, 1) if impl != "python" else size(2, 1)
    data = one * ((mib << 20) // len(one))
    units(benchmark, len(data), "bytes")
    if impl == "rust":
        benchmark(_core.validate_and_assign, data, 0, 0, None, 1 << 20)
    elif impl == "python":

        def python() -> None:
            headers = pybatch.validate_batches(data, 1 << 20, None)
            pybatch.assign_offsets(bytearray(data), headers, 0, 0, None)

        benchmark(python)
    else:
        benchmark(crc32c.crc32c, data)


def _append_rounds(benchmark, bench_dir, impl, name, records, calls, durable=False):
    """Appends `calls` times per round to one long-lived log (or, for the limit, os.write of
    the same encoded batch to one file in the same directory). The durable variant appends the
    pre-built batch bytes (the broker's and replica's path) and fsyncs after each."""
    encoded = tidelog.records.build_batch(records, now_ms=1_700_000_000_000)
    path = fresh(bench_dir, name)
    if impl == "limit":
        path.mkdir(parents=True)
        fd = os.open(path / "00000000000000000000.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)

        def run():
            for _ in range(calls):
                os.write(fd, encoded)
                if durable:
                    os.fdatasync(fd)

        log = None
    else:
        log = tidelog.Log.open(path, engine=impl)

        def run():
            if durable:
                for _ in range(calls):
                    log.append_batches(encoded)
                    log.flush()
            else:
                for _ in range(calls):
                    log.append(records, timestamp=1_700_000_000_000)

    units(benchmark, calls * len(records), "records")
    try:
        benchmark.pedantic(run, rounds=size(15, 1), warmup_rounds=size(1, 0))
    finally:
        if log is None:
            os.close(fd)
        else:
            log.close()


# 2. append: 1000-record batches of 100 B; single-record appends; limit: os.write of the same bytes
@pytest.mark.benchmark(group="append 1000 x 100 B")
@pytest.mark.parametrize("impl", IMPLS)
def test_append_batches(benchmark, bench_dir, impl):
    records = [(None, b"v" * 100)] * 1000
    _append_rounds(
        benchmark, bench_dir, impl, "append", records, size(100, 2) if impl != "python" else size(5, 1)
    )


@pytest.mark.benchmark(group="append 1 x 100 B")
@pytest.mark.parametrize("impl", IMPLS)
def test_append_single(benchmark, bench_dir, impl):
    records = [(None, b"v" * 100)]
    _append_rounds(
        benchmark,
        bench_dir,
        impl,
        "single",
        records,
        size(20_000, 100) if impl != "python" else size(2000, 10),
    )


# 6. durable append of a pre-built 1000-record batch, one fsync each; limit: write + fdatasync
@pytest.mark.benchmark(group="durable append 1000 x 100 B")
@pytest.mark.parametrize("impl", IMPLS)
def test_durable_append(benchmark, bench_dir, impl):
    records = [(None, b"v" * 100)] * 1000
    _append_rounds(
        benchmark,
        bench_dir,
        impl,
        "durable",
        records,
        size(20, 2) if impl != "python" else size(5, 1),
        durable=True,
    )


# 3. read back: as Records, and read_raw of whole batches; limit: reading the file in the same
#    4 MiB chunks
READ_BATCH = batch_of(1000, 100)


def _read_log(prepared_log):
    return prepared_log("read", READ_BATCH, size(200, 2))


@pytest.mark.benchmark(group="read as Records (100 B)")
@pytest.mark.parametrize("impl", IMPLS)
def test_read_records(benchmark, prepared_log, impl):
    paths = _read_log(prepared_log)
    path = paths["rust" if impl == "limit" else impl]
    if impl == "limit":
        seg = path / "00000000000000000000.log"
        units(benchmark, size(200, 2) * 1000, "records")
        benchmark(seg.read_bytes)
        return
    with tidelog.Log.open(path, engine=impl) as log:
        end = log.end_offset if impl == "rust" else min(log.end_offset, size(20_000, 1000))
        units(benchmark, end, "records")

        def run():
            pos = 0
            while pos < end:
                pos = log.read(pos, max_bytes=1 << 20)[-1].offset + 1

        benchmark(run)


@pytest.mark.benchmark(group="read_raw whole batches")
@pytest.mark.parametrize("impl", IMPLS)
def test_read_raw(benchmark, prepared_log, impl):
    paths = _read_log(prepared_log)
    path = paths["rust" if impl == "limit" else impl]
    seg = path / "00000000000000000000.log"
    total = seg.stat().st_size
    if impl == "limit":
        units(benchmark, total, "bytes")
        fd = os.open(seg, os.O_RDONLY)

        def chunks():
            for pos in range(0, total, READ_CHUNK):
                os.pread(fd, READ_CHUNK, pos)

        try:
            benchmark(chunks)
        finally:
            os.close(fd)
        return
    batch_len = len(READ_BATCH)
    with tidelog.Log.open(path, engine=impl) as log:
        budget = total if impl == "rust" else min(total, size(4 << 20, 1 << 20))
        units(benchmark, budget, "bytes")

        def run():
            pos = got = 0
            while got < budget:
                chunk = log.read_raw(pos, READ_CHUNK)
                got += len(chunk)
                # The log is uniform 1000-record batches: the next offset follows from the size.
                pos += len(chunk) // batch_len * 1000

        benchmark(run)


# 4. index lookups of random offsets in a log of 1M records (per call, from Python)
@pytest.mark.benchmark(group="index lookup (1M records)")
@pytest.mark.parametrize("impl", ["rust", "python"])
def test_index_lookup(benchmark, prepared_log, impl):
    paths = prepared_log("lookup", batch_of(100, 10), size(10_000, 100))
    with tidelog.Log.open(paths[impl], engine=impl) as log:
        rng = random.Random(1)
        targets = [rng.randrange(log.end_offset) for _ in range(size(10_000, 100))]
        lookup = log.index_lookup
        units(benchmark, len(targets), "calls")

        def run():
            for t in targets:
                lookup(t)

        benchmark(run)


# 7. decoding is linear in the batch size: one 16,000-record batch (10 B values) read as
# Records; compare with "read as Records (100 B)" (1000-record batches)
@pytest.mark.benchmark(group="read as Records, one 16,000-record batch")
@pytest.mark.parametrize("impl", ["rust", "python"])
def test_read_one_huge_batch(benchmark, prepared_log, impl):
    records = size(16_000, 2_000)
    paths = prepared_log(f"huge-{records}", batch_of(records, 10), 1)
    with tidelog.Log.open(paths[impl], engine=impl) as log:
        units(benchmark, records, "records")
        benchmark(lambda: log.read(0, max_bytes=1 << 22))


# 5. sendfile of a segment to a local socket; limit: os.sendfile of the same file
@pytest.mark.benchmark(group="sendfile to a socket")
@pytest.mark.parametrize("impl", IMPLS)
def test_sendfile(benchmark, prepared_log, impl):
    paths = prepared_log("sendfile", batch_of(1000, 1000), size(256, 2), max_message_bytes=2 << 20)
    path = paths["rust" if impl == "limit" else impl]
    seg = path / "00000000000000000000.log"
    total = seg.stat().st_size
    units(benchmark, total, "bytes")
    a, b = socket.socketpair()
    drained = threading.Event()

    def drain():
        buf = bytearray(1 << 20)
        while b.recv_into(buf):
            pass
        drained.set()

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    log = None if impl == "limit" else tidelog.Log.open(path, engine=impl, max_message_bytes=2 << 20)
    fd = os.open(seg, os.O_RDONLY)
    try:
        if log is None:

            def run():
                sent = 0
                while sent < total:
                    sent += os.sendfile(a.fileno(), fd, sent, total - sent)
        else:
            sl = log.slice(0, total)
            assert sl.length == total

            def run():
                sent = 0
                while sent < sl.length:
                    sent += sl.send(a.fileno(), sent)

        benchmark.pedantic(run, rounds=size(10, 1), warmup_rounds=1 if total > (8 << 20) else 0)
    finally:
        os.close(fd)
        a.close()
        drained.wait(30)
        b.close()
        if log is not None:
            log.close()
