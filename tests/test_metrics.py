"""Prometheus metrics with Kafka's names: a broker with traffic from real clients is scraped
over HTTP; every metric the README's table names is there with its labels, and the counters
agree with what the test did (messages in = records acknowledged, lag = high watermark minus
the committed offset, a refused login counted). In a cluster, under-replicated partitions
rise when a follower is killed and fall back to 0 once it has caught up."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from tidelog.cluster.local import free_port
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import start_broker
from tidelog.records import build_batch

from .cluster import member, needs_etcd, restart
from .conftest import poll_until, stop_gracefully
from .kafka_clients import create_topic
from .wire import Wire, fetch_request, produce_raw

README = Path(__file__).resolve().parent.parent / "README.md"
Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    """Every sample served at /metrics: name -> [(labels, value)]; a family declared without
    samples yet (no client throttled so far, say) maps its sample names to []."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        for suffix in suffixes:
            out.setdefault(family.name + suffix, [])
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The one sample of ``name`` with exactly ``labels``."""
    found = [v for got, v in samples.get(name, []) if got == labels]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def readme_metrics() -> list[tuple[str, list[str]]]:
    """The README's metric table: (sample name, its labels) per row."""
    rows = re.findall(r"^\| `(kafka_[a-z_]+)(?:\{([a-z_, ]*)\})?` \|", README.read_text(), re.M)
    assert len(rows) >= 20
    return [(name, [x.strip() for x in labels.split(",") if x.strip()]) for name, labels in rows]


def test_a_scraped_broker_shows_what_its_clients_did(tmp_path):
    jaas = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_u="pw";'
    broker = start_broker(
        tmp_path / "b",
        **{
            "metrics.listen": "127.0.0.1:0",
            "listeners": "PLAINTEXT://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0",
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.jaas.config": jaas,
            "group.initial.rebalance.delay.ms": "0",
        },
    )
    try:
        port = broker.broker.metrics_port
        assert port
        create_topic("confluent-kafka", broker.bootstrap, "orders", 2)
        acked: list[int] = []
        p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 2})
        for i in range(500):
            p.produce(
                "orders",
                b"order-%d" % i,
                partition=i % 2,
                on_delivery=lambda e, _m: acked.append(1) if not e else None,
            )
        assert p.flush(30) == 0
        # A group reads partition 0 up to offset 100 and commits there.
        c = Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": "billing", "enable.auto.commit": False}
        )
        c.assign([TopicPartition("orders", 0, 0)])
        got = 0
        while got < 100:
            got += len([msg for msg in c.consume(100 - got, 5) if not msg.error()])
        c.commit(offsets=[TopicPartition("orders", 0, 100)], asynchronous=False)
        c.close()
        # One refused login on the SASL listener.
        sasl_port = next(e.port for e in broker.broker.endpoints if e.name == "SASL_PLAINTEXT")
        w = Wire(f"127.0.0.1:{sasl_port}")
        assert w.request(m.SaslHandshakeRequest(mechanism="PLAIN"), 1).error_code == ec.NONE
        refused = w.request(m.SaslAuthenticateRequest(auth_bytes=b"\0u\0wrong"), 2)
        assert refused.error_code == ec.SASL_AUTHENTICATION_FAILED
        w.close()
        # One produce over a 1 B/s quota: throttled ("tidelog-tests" is the wire client's id).
        w = Wire(broker.bootstrap)
        A = m.AlterClientQuotasRequest
        entry = A.EntryData(
            entity=[A.EntryData.EntityData(entity_type="client-id", entity_name="tidelog-tests")],
            ops=[A.EntryData.OpData(key="producer_byte_rate", value=1.0, remove=False)],
        )
        assert w.request(A(entries=[entry], validate_only=False), 1).entries[0].error_code == ec.NONE
        assert produce_raw(w, "orders", build_batch([(None, b"x")], now_ms=0))[0] == ec.NONE
        w.close()  # muted for its throttle time (KIP-219)
        # One fetch over a 1 B/s quota of every user's (the wire client is User:ANONYMOUS).
        w = Wire(broker.bootstrap)
        entry = A.EntryData(
            entity=[A.EntryData.EntityData(entity_type="user", entity_name=None)],
            ops=[A.EntryData.OpData(key="consumer_byte_rate", value=1.0, remove=False)],
        )
        assert w.request(A(entries=[entry], validate_only=False), 1).entries[0].error_code == ec.NONE
        fetched = w.request(fetch_request("orders", 1, 0, 0), 12)
        assert fetched.throttle_time_ms > 0
        w.close()

        samples = scrape(port)
        for name, labels in readme_metrics():
            assert name in samples, f"{name} is in the README but not served"
            if labels and samples[name]:
                assert any(set(labels) <= set(got) for got, _ in samples[name]), (name, labels, samples[name])
        topic_in = "kafka_server_brokertopicmetrics_messagesin_total"
        assert value(samples, topic_in, topic="orders") == len(acked) + 1 == 501
        assert value(samples, topic_in) == 501
        throttled = "kafka_server_quota_throttle_time_total"
        assert value(samples, throttled, resource="Produce", user="", client_id="tidelog-tests") > 0
        assert value(samples, throttled, resource="Fetch", user="ANONYMOUS", client_id="") > 0
        assert len(samples[throttled]) == 2
        for idle in ("requesthandleravgidle", "networkprocessoravgidle"):
            share = samples[next(n for n in samples if n.endswith(f"_{idle}_percent"))]
            assert len(share) == 1 and 0 < share[0][1] <= 1
        assert value(samples, "kafka_server_brokertopicmetrics_bytesout_total", topic="orders") > 0
        assert value(samples, "kafka_log_log_logendoffset", topic="orders", partition="0") == 251
        assert (
            value(samples, "kafka_consumergroup_lag", group="billing", topic="orders", partition="0") == 151
        )
        assert value(samples, "kafka_coordinator_group_groupmetadatamanager_offsetcommits_total") == 1
        assert (
            value(
                samples,
                "kafka_server_socketservermetrics_failed_authentication_total",
                listener="SASL_PLAINTEXT",
            )
            == 1
        )
        assert value(samples, "kafka_server_replicamanager_partitioncount") >= 2
        assert value(samples, "kafka_controller_kafkacontroller_activecontrollercount") == 1
        # The test sent one SaslHandshake v1 and one SaslAuthenticate itself; each is counted once.
        requests = "kafka_network_requestmetrics_requests_total"
        assert value(samples, requests, request="SaslHandshake", version="1") == 1
        assert (
            value(samples, "kafka_network_requestmetrics_totaltimems_count", request="SaslAuthenticate") == 1
        )
        produces = sum(v for labels, v in samples[requests] if labels["request"] == "Produce")
        assert produces >= 1
        assert (
            value(samples, "kafka_network_requestmetrics_errors_total", request="Produce", error="NONE")
            >= produces
        )
        assert (
            value(
                samples,
                "kafka_network_requestmetrics_errors_total",
                request="SaslAuthenticate",
                error="SASL_AUTHENTICATION_FAILED",
            )
            == 1
        )
    finally:
        broker.stop()


def test_the_idle_share_falls_while_the_event_loop_is_blocked_and_recovers(tmp_path):
    broker = start_broker(tmp_path / "b", **{"metrics.listen": "127.0.0.1:0"})
    try:
        port = broker.broker.metrics_port
        assert port

        def idle_share() -> float:
            return value(scrape(port), "kafka_server_kafkarequesthandlerpool_requesthandleravgidle_percent")

        # The workload: a blocking call on the broker's event loop keeps it busy for 2 s.
        broker.call(time.sleep, 2.0)
        busy = idle_share()
        assert 0 <= busy < 0.5
        poll_until(lambda: idle_share() > busy + 0.2, "the idle share to rise again")
    finally:
        broker.stop()


@needs_etcd
def test_under_replicated_partitions_rise_when_a_follower_dies_and_fall_back_when_it_returns(tmp_path, etcd):
    cluster = uuid.uuid4().hex[:8]
    metrics_ports = {1: free_port(), 2: free_port()}
    procs, ports = {}, {}
    engines = ("rust", "rust")
    extra = {n: ("--set", f"metrics.listen=127.0.0.1:{metrics_ports[n]}") for n in (1, 2)}
    try:
        for node in (1, 2):
            procs[node], ports[node] = member(tmp_path, etcd, node, cluster, *extra[node])
        bootstrap = f"127.0.0.1:{ports[1]}"
        create_topic("confluent-kafka", bootstrap, "replicated", 4, replication_factor=2)

        def under(node: int) -> float:
            return value(scrape(metrics_ports[node]), "kafka_server_replicamanager_underreplicatedpartitions")

        poll_until(lambda: under(1) == 0 and under(2) == 0, "every partition fully replicated")
        led_by_2 = value(scrape(metrics_ports[2]), "kafka_server_replicamanager_leadercount")
        procs[2].kill()
        procs[2].wait(30)
        # Broker 1 now leads all four, with broker 2 gone from their ISRs.
        poll_until(lambda: under(1) == 4, "broker 1 to report 4 under-replicated partitions")
        assert led_by_2 > 0
        # Broker 1, now the controller, moved broker 2's leaderships to itself.
        elections = "kafka_controller_controllerstats_leaderelectionrateandtimems_count"
        assert value(scrape(metrics_ports[1]), elections) >= led_by_2
        procs[2], _ = restart(tmp_path, etcd, cluster, 2, ports[2], engines, *extra[2])
        poll_until(lambda: under(1) == 0, "the follower to catch up")
        shrinks_and_expands = scrape(metrics_ports[1])
        assert value(shrinks_and_expands, "kafka_server_replicamanager_isrexpands_total") >= 4
    finally:
        for proc in procs.values():
            stop_gracefully(proc)


def test_the_grafana_dashboard_queries_only_metrics_a_broker_serves(tmp_path):
    import json

    dashboard = json.loads((README.parent / "grafana" / "tidelog.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(kafka_[a-z_]+)", target["expr"])
    }
    assert len(queried) >= 15
    broker = start_broker(tmp_path / "b", **{"metrics.listen": "127.0.0.1:0"})
    try:
        served = scrape(broker.broker.metrics_port)
        assert sorted(queried - set(served)) == []
    finally:
        broker.stop()


def test_tidelog_top_shows_topics_short_isrs_and_lag(tmp_path):
    """``tidelog top`` refreshes twice from Metadata and /metrics and exits; the last screen
    has the topic with its partitions and the group with its lag."""
    import subprocess
    import sys

    broker = start_broker(tmp_path / "b", **{"metrics.listen": "127.0.0.1:0"})
    try:
        create_topic("confluent-kafka", broker.bootstrap, "viewed", 3)
        p = Producer({"bootstrap.servers": broker.bootstrap})
        for i in range(90):
            p.produce("viewed", b"x", partition=i % 3)
        assert p.flush(30) == 0
        c = Consumer(
            {"bootstrap.servers": broker.bootstrap, "group.id": "watchers", "enable.auto.commit": False}
        )
        c.commit(offsets=[TopicPartition("viewed", i, 10) for i in range(3)], asynchronous=False)
        c.close()
        url = f"http://127.0.0.1:{broker.broker.metrics_port}/metrics"
        shown = subprocess.run(
            [sys.executable, "-m", "tidelog.cli", "top", "--bootstrap-server", broker.bootstrap,
             "--metrics", url, "--iterations", "2", "--interval", "0.2"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        rows = [line.replace("│", " ").split() for line in shown.stdout.splitlines()]
        assert ["viewed", "3", "0", "0", "0"] in rows  # no traffic between the two refreshes
        assert ["watchers", "viewed", "60"] in rows  # 3 x (30 - 10)
    finally:
        broker.stop()
