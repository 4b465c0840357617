"""Benchmark sizes and shared data. ``TIDELOG_BENCH_SMOKE=1`` shrinks everything so CI can check
that the benchmarks run; real figures come from a full run (see README.md here)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import tidelog
from tidelog.records import build_batch

SMOKE = os.environ.get("TIDELOG_BENCH_SMOKE") == "1"


def size(full: int, smoke: int) -> int:
    return smoke if SMOKE else full


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory on the same filesystem as the logs under test."""
    d = tmp_path_factory.mktemp("bench")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def batch_of(records: int, value_bytes: int) -> bytes:
    return build_batch([(None, b"v" * value_bytes)] * records, now_ms=1_700_000_000_000)


@pytest.fixture(scope="session")
def prepared_log(bench_dir: Path):
    """make(name, batch, count, **settings) -> {engine: path}: a log of `count` copies of
    `batch` written once with the Rust engine and copied for the pure-Python engine (the
    files are byte-identical, so both engines read the same bytes)."""
    cache: dict[str, dict[str, Path]] = {}

    def make(name: str, batch: bytes, count: int, **settings: object) -> dict[str, Path]:
        if name not in cache:
            rust = bench_dir / f"{name}-rust" / "p-0"
            with tidelog.Log.open(rust, engine="rust", **settings) as log:
                chunk = batch * max(1, (8 << 20) // len(batch))
                n = count
                per = len(chunk) // len(batch)
                while n > 0:
                    take = min(n, per)
                    log.append_batches(chunk[: take * len(batch)])
                    n -= take
            python = bench_dir / f"{name}-python" / "p-0"
            shutil.copytree(rust, python)
            cache[name] = {"rust": rust, "python": python}
        return cache[name]

    return make
