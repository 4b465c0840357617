"""Deleting topics while clients produce to them: nothing acknowledged into the topic that
exists afterwards is ever lost, the name is reusable at once with fresh directories, and the
old files go away in the background. A real broker on both engines, real sockets, real
clients; restarts between the writes and the reads."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import start_broker

from .conftest import poll_until
from .kafka_clients import consume, create_topic
from .wire import Wire, produce_one, read_all

TOPIC = "doomed"


def delete_topic(w: Wire, topic: str) -> int:
    resp = w.request(m.DeleteTopicsRequest(topic_names=[topic], timeout_ms=10_000), 4)
    return int(resp.responses[0].error_code)


def partition_dirs(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir() if p.name.startswith(TOPIC))


def test_produces_racing_deletes_lose_nothing_of_the_surviving_topic(tmp_path, engine):
    """One thread deletes the topic over and over while another produces to it (re-created
    each time by auto-creation). Produces sent after the last delete was answered must all be
    there, once, at their acknowledged offsets, after a restart; while deletion is under way
    the producer gets only retriable errors, never an internal failure."""
    data = tmp_path / "b"
    broker = start_broker(data, engine, **{"log.segment.bytes": "2000"})
    stamp = itertools.count()
    changed = threading.Condition()  # the lock for the shared state; notified when it changes
    acks: list[tuple[int, int, int, bytes]] = []  # (stamp when sent, error, offset, value)
    last_delete_done = [-1]
    stop = threading.Event()
    deletes_done = threading.Event()
    failures: list[BaseException] = []

    def guarded(fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                with changed:
                    failures.append(e)
                    stop.set()
                    changed.notify_all()
                deletes_done.set()

        return run

    def producer() -> None:
        w = Wire(broker.bootstrap)
        try:
            for i in itertools.count():
                if stop.is_set():
                    return
                with changed:
                    sent = next(stamp)
                value = b"v%d" % i
                code, offset = produce_one(w, TOPIC, value)
                with changed:
                    acks.append((sent, code, offset, value))
                    changed.notify_all()
        finally:
            w.close()

    def deleter() -> None:
        w = Wire(broker.bootstrap)
        try:
            for _ in range(25):
                with changed:
                    assert changed.wait_for(
                        lambda: (
                            stop.is_set()
                            or any(code == 0 for s, code, _, _ in acks if s > last_delete_done[0])
                        ),
                        30,
                    ), "no produce acknowledged since the last delete"
                assert delete_topic(w, TOPIC) in (ec.NONE, ec.UNKNOWN_TOPIC_OR_PARTITION)
                with changed:
                    last_delete_done[0] = next(stamp)
        finally:
            w.close()
            deletes_done.set()

    threads = [threading.Thread(target=guarded(producer)), threading.Thread(target=guarded(deleter))]
    try:
        for t in threads:
            t.start()
        assert deletes_done.wait(120)
        assert not failures, failures
        with changed:
            assert changed.wait_for(
                lambda: (
                    stop.is_set()
                    or sum(1 for s, code, _, _ in acks if s > last_delete_done[0] and code == 0) >= 200
                ),
                60,
            ), "200 produces not acknowledged after the last delete"
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        broker.stop()
    assert not failures, failures

    codes = {code for _, code, _, _ in acks}
    assert codes <= {ec.NONE, ec.UNKNOWN_TOPIC_OR_PARTITION, ec.LEADER_NOT_AVAILABLE}, codes
    survivors = {offset: value for s, code, offset, value in acks if s > last_delete_done[0] and code == 0}
    assert len(survivors) >= 200

    broker = start_broker(data, engine)
    try:
        stored = read_all(broker.bootstrap, TOPIC)
        for offset, value in survivors.items():
            assert stored.get(offset) == value, f"acknowledged offset {offset} lost or changed"
        assert len(set(stored.values())) == len(stored), "a record stored twice"
        poll_until(lambda: partition_dirs(data) == [f"{TOPIC}-0"], "the deleted directories purged")
    finally:
        broker.stop()


@pytest.mark.parametrize("client", ["confluent-kafka"])
def test_a_topic_recreated_after_delete_holds_only_its_own_records(tmp_path, engine, client):
    """The Kafka admin client deletes a topic with records; the same name is created again
    at once; the new topic starts empty at offset 0, its records survive a restart, and the
    old partition directories are gone."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    data = tmp_path / "b"
    broker = start_broker(data, engine)
    try:
        create_topic(client, broker.bootstrap, TOPIC, 2)
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for i in range(50):
            p.produce(TOPIC, value=b"old%d" % i, partition=i % 2)
        assert p.flush(30) == 0
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.delete_topics([TOPIC], operation_timeout=30)[TOPIC].result(30)
        create_topic(client, broker.bootstrap, TOPIC, 2)
        delivered: list[tuple[int, int]] = []
        for i in range(30):
            p.produce(
                TOPIC,
                value=b"new%d" % i,
                partition=i % 2,
                on_delivery=lambda e, msg: (
                    delivered.append((msg.partition(), msg.offset())) if not e else None
                ),
            )
        assert p.flush(30) == 0
        assert sorted(delivered) == sorted((i % 2, i // 2) for i in range(30))
    finally:
        broker.stop()
    broker = start_broker(data, engine)
    try:
        got = consume(client, broker.bootstrap, TOPIC, 2, 30)
        assert sorted(v for *_, v in got) == sorted(b"new%d" % i for i in range(30))
        poll_until(lambda: partition_dirs(data) == [f"{TOPIC}-0", f"{TOPIC}-1"], "the old directories purged")
    finally:
        broker.stop()
