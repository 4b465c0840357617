"""Client quotas, as Kafka's: set and described with AlterClientQuotas / DescribeClientQuotas
(Kafka's ``kafka-configs`` and the wire API, with Kafka's validation), kept across restarts,
and enforced: a producer over its ``producer_byte_rate`` gets throttle times and is held to
its rate, a consumer over its ``consumer_byte_rate`` gets empty throttled answers, and a
client without a quota on the same broker is never throttled."""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import start_broker

from .wire import Wire, create_topic

A = m.AlterClientQuotasRequest
D = m.DescribeClientQuotasRequest


def alter(
    w: Wire, entity: dict[str, str | None], ops: dict[str, float | None], validate: bool = False
) -> int:
    entry = A.EntryData(
        entity=[A.EntryData.EntityData(entity_type=t, entity_name=n) for t, n in entity.items()],
        ops=[A.EntryData.OpData(key=k, value=v or 0.0, remove=v is None) for k, v in ops.items()],
    )
    r = w.request(A(entries=[entry], validate_only=validate), 1)
    return int(r.entries[0].error_code)


def describe(w: Wire, *components: tuple[str, int, str | None], strict: bool = False) -> dict:
    req = D(
        components=[D.ComponentData(entity_type=t, match_type=mt, match=n) for t, mt, n in components],
        strict=strict,
    )
    r = w.request(req, 1)
    assert r.error_code == ec.NONE, r.error_message
    return {
        tuple((e.entity_type, e.entity_name) for e in entry.entity): {v.key: v.value for v in entry.values}
        for entry in r.entries
    }


def test_quotas_are_validated_described_and_kept_across_restarts(tmp_path):
    from .kafka_tools import run_java

    broker = start_broker(tmp_path / "q")
    try:
        w = Wire(broker.bootstrap)
        assert alter(w, {"user": "alice"}, {"producer_byte_rate": 1024.0}) == ec.NONE
        assert alter(w, {"user": "alice", "client-id": None}, {"consumer_byte_rate": 2048.0}) == ec.NONE
        assert alter(w, {"client-id": "app"}, {"request_percentage": 12.5}) == ec.NONE
        assert alter(w, {"client-id": None}, {"producer_byte_rate": 4096.0}) == ec.NONE
        assert alter(w, {"user": "zed"}, {"producer_byte_rate": 1.0}, validate=True) == ec.NONE
        # Kafka's refusals.
        assert alter(w, {"user": "bob"}, {"no_such_rate": 1.0}) == ec.INVALID_REQUEST
        assert alter(w, {"user": "bob"}, {"producer_byte_rate": 0.5}) == ec.INVALID_REQUEST
        assert alter(w, {"user": "bob"}, {"producer_byte_rate": -1.0}) == ec.INVALID_REQUEST
        assert alter(w, {"ip": "1.2.3.4"}, {"producer_byte_rate": 1.0}) == ec.INVALID_REQUEST
        assert alter(w, {"user": ""}, {"producer_byte_rate": 1.0}) == ec.INVALID_REQUEST
        everything = describe(w)
        assert everything == {
            (("user", "alice"),): {"producer_byte_rate": 1024.0},
            (("client-id", None), ("user", "alice")): {"consumer_byte_rate": 2048.0},
            (("client-id", "app"),): {"request_percentage": 12.5},
            (("client-id", None),): {"producer_byte_rate": 4096.0},
        }
        assert list(describe(w, ("user", 0, "alice"), strict=True)) == [(("user", "alice"),)]
        assert list(describe(w, ("client-id", 1, None))) == [
            (("client-id", None), ("user", "alice")),
            (("client-id", None),),
        ]
        assert list(describe(w, ("client-id", 2, None))) == [(("client-id", "app"),)]
        # Kafka's kafka-configs reads and writes them too.
        done = run_java(
            "org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", broker.bootstrap, "--alter",
            "--add-config", "producer_byte_rate=65536,consumer_byte_rate=131072",
            "--entity-type", "clients", "--entity-name", "batch-job",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        shown = run_java(
            "org.apache.kafka.tools.ConfigCommand", "--bootstrap-server", broker.bootstrap, "--describe",
            "--entity-type", "users", "--entity-name", "alice",
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "producer_byte_rate=1024.0" in shown.stdout
        assert describe(w, ("client-id", 0, "batch-job"))[(("client-id", "batch-job"),)] == {
            "consumer_byte_rate": 131072.0,
            "producer_byte_rate": 65536.0,
        }
        assert alter(w, {"client-id": "app"}, {"request_percentage": None}) == ec.NONE
        w.close()
        config = broker.broker.config
        broker.stop()
        from tidelog.broker import Broker

        broker = Broker(config).run_in_thread()
        w = Wire(broker.bootstrap)
        again = describe(w)
        assert (("client-id", "app"),) not in again
        assert again[(("user", "alice"),)] == {"producer_byte_rate": 1024.0}
        w.close()
    finally:
        broker.stop()


def produce_for(bootstrap: str, client_id: str, seconds: float, stop: threading.Event, out: dict) -> None:
    """Produces 1 KiB records flat out for ``seconds``; ``out["acked"]``: when (seconds into
    the run) each was acknowledged."""
    p = Producer({"bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5, "acks": "1"})
    acked: list[float] = []
    value = b"x" * 1024
    start = time.monotonic()
    while time.monotonic() - start < seconds and not stop.is_set():
        try:
            p.produce(
                "quota", value, on_delivery=lambda e, _m: acked.append(time.monotonic()) if not e else None
            )
        except BufferError:
            p.poll(0.05)
        p.poll(0)
    p.flush(30)
    out["acked"] = [t - start for t in acked]


def test_a_producer_over_its_quota_is_held_to_it_and_an_unlimited_one_is_not_throttled(tmp_path):
    """``producer_byte_rate`` = 1 MB/s for client id ``limited``: over 10 s after its first
    second its acknowledged rate is within 20% of 1 MB/s (quota windows of 1 s, two of them,
    so the burst allowed at the start is short), and the broker answered it with throttle
    times; ``free``, on the same broker at the same time, got none."""
    broker = start_broker(tmp_path / "q", **{"quota.window.num": "2", "quota.window.size.seconds": "1"})
    try:
        w = Wire(broker.bootstrap)
        assert create_topic(w, "quota", 2) == ec.NONE
        assert alter(w, {"client-id": "limited"}, {"producer_byte_rate": 1_000_000.0}) == ec.NONE
        w.close()
        quotas = broker.broker.quotas
        limited: dict = {}
        free: dict = {}
        stop = threading.Event()
        threads = [
            threading.Thread(target=produce_for, args=(broker.bootstrap, "limited", 11.0, stop, limited)),
            threading.Thread(target=produce_for, args=(broker.bootstrap, "free", 11.0, stop, free)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        window = [t for t in limited["acked"] if 1.0 <= t < 11.0]
        rate = len(window) * 1024 / 10.0
        assert 0.8e6 <= rate <= 1.2e6, f"limited producer acknowledged {rate / 1e6:.2f} MB/s"
        assert quotas.throttled_ms[("Produce", "", "limited")] > 0
        assert not any(client == "free" for _, _, client in quotas.throttled_ms)
        assert len(free["acked"]) * 1024 / 11.0 > rate  # the unlimited one was not held back
    finally:
        broker.stop()


def test_a_consumer_over_its_quota_gets_empty_throttled_answers(tmp_path):
    """``consumer_byte_rate`` = 200 kB/s for client id ``slow``: it reads 2 MB at no more than
    that rate (+20%), getting throttled (empty) answers, while ``fast`` is never throttled."""
    broker = start_broker(tmp_path / "q", **{"quota.window.num": "2", "quota.window.size.seconds": "1"})
    try:
        w = Wire(broker.bootstrap)
        assert create_topic(w, "quota", 1) == ec.NONE
        assert alter(w, {"client-id": "slow"}, {"consumer_byte_rate": 200_000.0}) == ec.NONE
        w.close()
        # Batches well under what the quota allows at once (200 kB): a fetch returns at least
        # one whole batch, and one over it would be throttled every time (as in Kafka).
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "batch.size": 16384})
        for _ in range(2000):
            p.produce("quota", b"y" * 1000)
        assert p.flush(30) == 0

        def read_all(client_id: str) -> float:
            c = Consumer(
                {"bootstrap.servers": broker.bootstrap, "group.id": client_id, "client.id": client_id,
                 "enable.auto.commit": False}
            )  # fmt: skip
            c.assign([TopicPartition("quota", 0, 0)])
            start, got = time.monotonic(), 0
            while got < 2000 and time.monotonic() - start < 60:
                got += len([msg for msg in c.consume(500, 0.2) if not msg.error()])
            c.close()
            assert got == 2000
            return time.monotonic() - start

        read_all("fast")
        slow = read_all("slow")
        throttled = broker.broker.quotas.throttled_ms
        assert throttled[("Fetch", "", "slow")] > 0
        assert not any(client == "fast" for _, _, client in throttled)
        # Held to its rate: 2 MB, less the 200 kB its first window allows, at 200 kB/s.
        assert 1.8e6 / slow <= 1.2 * 200_000, f"slow consumer read {1.8e6 / slow / 1e3:.0f} kB/s"
    finally:
        broker.stop()
