"""Descriptor exhaustion: partition counts are checked against a limit (by default what the
open-files limit allows) before anything is created; a creation that fails half-way anyway
leaves nothing behind; the broker keeps accepting connections. A real broker process whose
RLIMIT_NOFILE the test lowers (prlimit), both engines."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import pytest

from tidelog.broker.config import DESCRIPTORS_PER_PARTITION, RESERVED_DESCRIPTORS
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process

from .conftest import poll_until, stop_gracefully
from .wire import Wire, create_topic

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses prlimit(2)")


def grow(w: Wire, name: str, count: int) -> int:
    P = m.CreatePartitionsRequest
    req = P(topics=[P.CreatePartitionsTopic(name=name, count=count)], timeout_ms=30_000, validate_only=False)
    return int(w.request(req, 2).results[0].error_code)


def partition_count(w: Wire, name: str) -> int | None:
    M = m.MetadataRequest
    req = M(topics=[M.MetadataRequestTopic(name=name)], allow_auto_topic_creation=False)
    t = w.request(req, 9).topics[0]
    return None if t.error_code else len(t.partitions)


def dirs_of(data: Path, topic: str) -> list[str]:
    return sorted(p.name for p in data.iterdir() if p.name.startswith(f"{topic}-"))


def test_partition_counts_beyond_the_descriptor_budget_are_refused_up_front(tmp_path, engine):
    data = tmp_path / "b"
    proc, port = serve_process(data, "--engine", engine)
    try:
        files = RESERVED_DESCRIPTORS + 40 * DESCRIPTORS_PER_PARTITION
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (files, files))
        w = Wire(f"127.0.0.1:{port}")
        assert create_topic(w, "big", 41) == ec.POLICY_VIOLATION
        assert dirs_of(data, "big") == []
        assert create_topic(w, "fits", 30) == ec.NONE
        assert grow(w, "fits", 41) == ec.POLICY_VIOLATION
        assert partition_count(w, "fits") == 30
        assert len(dirs_of(data, "fits")) == 30
        assert grow(w, "fits", 40) == ec.NONE
        other = Wire(f"127.0.0.1:{port}")  # new connections are still served
        assert other.request(m.ApiVersionsRequest(), 0).error_code == ec.NONE
        other.close()
        w.close()
    finally:
        assert stop_gracefully(proc) == 0


def test_a_creation_that_runs_out_of_descriptors_leaves_nothing_behind(tmp_path, engine):
    data = tmp_path / "b"
    proc, port = serve_process(data, "--engine", engine, "--set", "tidelog.max.partitions=100000")
    try:
        w = Wire(f"127.0.0.1:{port}")
        assert create_topic(w, "small", 1) == ec.NONE
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (200, 200))
        assert create_topic(w, "huge", 150) == ec.KAFKA_STORAGE_ERROR
        assert partition_count(w, "huge") is None
        poll_until(
            lambda: dirs_of(data, "huge") == [] and not list(data.glob("*-delete")), "nothing left of huge"
        )
        other = Wire(f"127.0.0.1:{port}")
        assert other.request(m.ApiVersionsRequest(), 0).error_code == ec.NONE
        assert create_topic(other, "after", 2) == ec.NONE
        assert grow(other, "small", 3) == ec.NONE
        other.close()
        w.close()
    finally:
        assert stop_gracefully(proc) == 0
    kept = sorted(p.name for p in data.iterdir() if p.is_dir() and p.name != "meta")
    assert kept == ["after-0", "after-1", "small-0", "small-1", "small-2"]
