"""Brokers coordinated through etcd (each its own ``tidelog serve --etcd`` process, a real
etcd, real clients): they register and elect a controller, share one metadata image, spread a
topic's partitions over themselves, answer only for what they lead, route real clients to
the leaders, refuse a second broker with a live node.id, and fence themselves when they
cannot renew their etcd lease. Replication itself is in test_replication.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid

from confluent_kafka import Consumer, Producer

from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.records import build_batch

from .cluster import member, metadata, needs_etcd, registered
from .conftest import poll_until, stop_gracefully
from .wire import Wire, create_topic, decode_response, fetch_request, produce_one, read_all

pytestmark = needs_etcd


def produce_request(topic: str, partition: int, value: bytes) -> m.ProduceRequest:
    """One acks=all record to one partition."""
    P = m.ProduceRequest
    batch = build_batch([(None, value)], now_ms=int(time.time() * 1000))
    data = P.TopicProduceData.PartitionProduceData(index=partition, records=batch)
    return P(acks=-1, timeout_ms=10_000, topic_data=[P.TopicProduceData(name=topic, partition_data=[data])])


def consume_group(bootstrap: str, topic: str, group: str, count: int) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of the first ``count`` records a new member of ``group`` reads from the
    topic's start (up to 60 s), after which it commits and leaves."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value()))
    consumer.commit(asynchronous=False)
    consumer.close()
    return got


def produce_to(w: Wire, topic: str, partition: int) -> int:
    """One acks=all record to one partition; its error code."""
    return int(
        w.request(produce_request(topic, partition, b"x"), 9).responses[0].partition_responses[0].error_code
    )


def test_two_brokers_share_the_metadata_and_serve_what_they_lead(tmp_path, etcd):
    cluster = uuid.uuid4().hex[:8]
    (p1, port1), (p2, port2) = member(tmp_path, etcd, 1, cluster), member(tmp_path, etcd, 2, cluster)
    ports = {1: port1, 2: port2}
    try:
        poll_until(lambda: len(metadata(port1).brokers) == 2, "both brokers in broker 1's image", 20)
        w = Wire(f"127.0.0.1:{port1}")
        try:
            assert create_topic(w, "spread", 6) == ec.NONE
        finally:
            w.close()
        for port in ports.values():
            poll_until(
                lambda port=port: len(metadata(port, "spread").topics[0].partitions) == 6, "the topic", 20
            )
        meta = {p: metadata(port, "spread") for p, port in ports.items()}
        for answer in meta.values():
            assert sorted((b.node_id, b.port) for b in answer.brokers) == [(1, port1), (2, port2)]
            assert answer.controller_id in (1, 2)
            assert answer.cluster_id == meta[1].cluster_id
        leaders = {p.partition_index: p.leader_id for p in meta[2].topics[0].partitions}
        assert leaders == {p.partition_index: p.leader_id for p in meta[1].topics[0].partitions}
        assert sorted(set(leaders.values())) == [1, 2], "the partitions are not spread over both brokers"
        # Each broker answers for what it leads, and tells the client who leads the rest.
        for node, port in ports.items():
            w = Wire(f"127.0.0.1:{port}")
            try:
                mine = [p for p, leader in leaders.items() if leader == node]
                other = [p for p, leader in leaders.items() if leader != node]
                assert [produce_to(w, "spread", p) for p in mine] == [ec.NONE] * len(mine)
                assert [produce_to(w, "spread", p) for p in other] == [ec.NOT_LEADER_OR_FOLLOWER] * len(other)
            finally:
                w.close()
        # A real client finds every leader, and a consumer group (its coordinator on whichever
        # broker leads the group's offsets partition) reads everything back.
        bootstrap = f"127.0.0.1:{port1},127.0.0.1:{port2}"
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
        sent = [(b"k%d" % i, b"v%d" % i) for i in range(600)]
        for k, v in sent:
            producer.produce("spread", key=k, value=v)
        assert producer.flush(30) == 0
        got = consume_group(bootstrap, "spread", "readers", len(sent) + len(leaders))
        assert sorted(kv for kv in got if kv[0] is not None) == sorted(sent)
        assert len(got) == len(sent) + len(leaders)  # and the six written over the wire above
    finally:
        assert stop_gracefully(p1) == 0
        assert stop_gracefully(p2) == 0


def test_a_live_node_id_is_refused_and_so_is_a_replication_factor_above_the_brokers(tmp_path, etcd):
    cluster = uuid.uuid4().hex[:8]
    p1, port1 = member(tmp_path, etcd, 1, cluster)
    try:
        twin = subprocess.run(
            [
                sys.executable,
                "-m",
                "tidelog.cli",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(tmp_path / "twin"),
                "--etcd",
                etcd.url,
                "--cluster-id",
                cluster,
                "--node-id",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert twin.returncode == 2
        assert "node.id 1 is registered by a live broker" in twin.stderr
        w = Wire(f"127.0.0.1:{port1}")
        try:
            C = m.CreateTopicsRequest
            req = C(
                topics=[C.CreatableTopic(name="rf3", num_partitions=1, replication_factor=3)], timeout_ms=5000
            )
            assert w.request(req, 5).topics[0].error_code == ec.INVALID_REPLICATION_FACTOR
        finally:
            w.close()
    finally:
        assert stop_gracefully(p1) == 0


def test_etcd_away_leaves_leaders_serving_and_makes_metadata_changes_wait(tmp_path, etcd):
    """etcd paused (SIGSTOP) for 10 s, past the session timeout: produce and fetch on the existing
    leader keep working, a metadata change gets REQUEST_TIMED_OUT (retriable), and with
    etcd back everything acknowledged is there. (A paused etcd may expire the lease when it
    resumes: the broker is fenced until it has registered again.)"""
    cluster = uuid.uuid4().hex[:8]
    p1, port1 = member(tmp_path, etcd, 1, cluster)
    w = Wire(f"127.0.0.1:{port1}")
    try:
        assert create_topic(w, "away", 1) == ec.NONE
        acked = [produce_one(w, "away", b"before")]
        etcd.proc.send_signal(signal.SIGSTOP)
        try:
            end = time.monotonic() + 10  # etcd away for 10 s, well past the 2 s session
            while time.monotonic() < end:
                acked.append(produce_one(w, "away", b"during"))
            assert create_topic(w, "new", 1) == ec.REQUEST_TIMED_OUT
        finally:
            etcd.proc.send_signal(signal.SIGCONT)
        assert all(code == ec.NONE for code, _ in acked)
        poll_until(lambda: create_topic(w, "later", 1) in (ec.NONE, ec.TOPIC_ALREADY_EXISTS), "etcd back", 30)

        def leads_again() -> bool:
            answer = produce_one(w, "away", b"after")
            if answer[0] == ec.NONE:
                acked.append(answer)
            return answer[0] == ec.NONE

        poll_until(leads_again, "the broker to lead again", 30)
        assert sorted(read_all(f"127.0.0.1:{port1}", "away")) == [offset for _, offset in acked]
    finally:
        w.close()
        assert stop_gracefully(p1) == 0


def test_a_restarted_etcd_leaves_every_broker_running_and_the_controller_working(tmp_path, etcd):
    """etcd stopped and started again (its watch streams end, its calls fail for a moment):
    both brokers, the controller among them, keep running, and the controller creates a
    topic afterwards. (The controller's broker used to exit: the error from its ended
    watch came out of a nursery wrapped in an ExceptionGroup that nothing caught.)"""
    cluster = uuid.uuid4().hex[:8]
    p1, port1 = member(tmp_path, etcd, 1, cluster)
    p2, port2 = member(tmp_path, etcd, 2, cluster)
    try:
        poll_until(lambda: metadata(port2).controller_id in (1, 2), "a controller", 20)
        etcd.stop()
        etcd.start()
        w = Wire(f"127.0.0.1:{port2}")
        try:
            poll_until(
                lambda: create_topic(w, "after", 2) in (ec.NONE, ec.TOPIC_ALREADY_EXISTS),
                "a topic created once etcd is back",
                30,
            )
        finally:
            w.close()
        poll_until(
            lambda: len(metadata(port1, "after").topics[0].partitions) == 2, "the topic on broker 1", 20
        )
        assert (p1.poll(), p2.poll()) == (None, None), "a broker exited"
    finally:
        for p in (p1, p2):
            if p.poll() is None:
                assert stop_gracefully(p) == 0


def test_a_paused_broker_acknowledges_nothing_as_leader_when_it_resumes(tmp_path, etcd):
    """The broker process paused (SIGSTOP) past its session while a produce waits in its
    socket: on resuming it refuses that produce (NOT_LEADER_OR_FOLLOWER) instead of
    acknowledging as a leader it may no longer be, then leads again once etcd has confirmed
    it."""
    cluster = uuid.uuid4().hex[:8]
    p1, port1 = member(tmp_path, etcd, 1, cluster)
    w = Wire(f"127.0.0.1:{port1}")
    try:
        assert create_topic(w, "paused", 1) == ec.NONE
        assert produce_one(w, "paused", b"before") == (ec.NONE, 0)
        p1.send_signal(signal.SIGSTOP)
        try:
            queued = produce_request("paused", 0, b"queued")
            w.request(queued, 9, expect_response=False)
            # Paused until its session is over: etcd has let its registration go.
            poll_until(lambda: not registered(etcd, cluster, 1), "the paused broker's lease to lapse", 15)
        finally:
            p1.send_signal(signal.SIGCONT)
        frame = w.read_frame()
        assert frame is not None
        _, answer = decode_response(frame, queued, 9)
        assert answer.responses[0].partition_responses[0].error_code == ec.NOT_LEADER_OR_FOLLOWER
        poll_until(lambda: produce_one(w, "paused", b"after")[0] == ec.NONE, "the broker to lead again", 30)
        assert b"queued" not in read_all(f"127.0.0.1:{port1}", "paused").values()
    finally:
        w.close()
        assert stop_gracefully(p1) == 0


def test_a_broker_that_leaves_takes_its_partitions_offline_until_it_returns(tmp_path, etcd):
    """A clean stop deregisters at once: the others report its partitions without a leader
    (LEADER_NOT_AVAILABLE, the broker an offline replica); Metadata still lists the broker
    for ``tidelog.metadata.departed.broker.ms`` (here long) while DescribeCluster does not;
    restarted on its data, it leads them again with everything it had acknowledged."""
    cluster = uuid.uuid4().hex[:8]
    p1, port1 = member(tmp_path, etcd, 1, cluster, "--set", "tidelog.metadata.departed.broker.ms=600000")
    p2, port2 = member(tmp_path, etcd, 2, cluster)
    try:
        poll_until(lambda: len(metadata(port1).brokers) == 2, "both brokers in broker 1's image", 20)
        w = Wire(f"127.0.0.1:{port1}")
        try:
            assert create_topic(w, "away", 4) == ec.NONE
        finally:
            w.close()
        poll_until(
            lambda: len(metadata(port2, "away").topics[0].partitions) == 4, "the topic on broker 2", 20
        )
        on_2 = [p.partition_index for p in metadata(port1, "away").topics[0].partitions if p.leader_id == 2]
        assert on_2, "broker 2 leads none of the 4 partitions"
        w = Wire(f"127.0.0.1:{port2}")
        try:
            assert all(produce_to(w, "away", p) == ec.NONE for p in on_2)
        finally:
            w.close()
        assert stop_gracefully(p2) == 0

        def without_2(port: int = port1):
            parts = metadata(port, "away").topics[0].partitions
            return [
                (p.error_code, p.leader_id, list(p.offline_replicas))
                for p in parts
                if p.partition_index in on_2
            ]

        poll_until(
            lambda: without_2() == [(ec.LEADER_NOT_AVAILABLE, -1, [2])] * len(on_2),
            "broker 2's partitions offline",
            20,
        )
        assert sorted(b.node_id for b in metadata(port1).brokers) == [1, 2]
        w = Wire(f"127.0.0.1:{port1}")
        try:
            assert [b.broker_id for b in w.request(m.DescribeClusterRequest(), 1).brokers] == [1]
        finally:
            w.close()
        p2, port2 = member(tmp_path, etcd, 2, cluster)
        poll_until(  # listed again, now at the port it registered
            lambda: {b.node_id: b.port for b in metadata(port1).brokers} == {1: port1, 2: port2},
            "broker 2 back in broker 1's answers",
            20,
        )
        for port in (port1, port2):  # each broker's image shows it once its watch has
            poll_until(
                lambda port=port: all(code == ec.NONE for code, _, _ in without_2(port)),
                "broker 2 to lead again",
                20,
            )
        w = Wire(f"127.0.0.1:{port2}")
        try:
            for p in on_2:
                fetched = w.request(fetch_request("away", p, 0, 0), 12).responses[0].partitions[0]
                assert (fetched.error_code, fetched.high_watermark) == (ec.NONE, 1)
        finally:
            w.close()
    finally:
        assert stop_gracefully(p1) == 0
        assert stop_gracefully(p2) == 0


def test_cluster_up_runs_etcd_and_brokers_until_interrupted(tmp_path):
    """``tidelog cluster up``: one etcd and N brokers as children, their logs prefixed, the
    bootstrap list printed; real clients use it; ``cluster status`` shows every broker; on
    SIGINT everything stops cleanly."""
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidelog.cli",
            "cluster",
            "up",
            "--brokers",
            "2",
            "--base-port",
            "0",
            "--data-dir",
            str(tmp_path / "c"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    lines: list[str] = []
    try:
        bootstrap = None
        deadline = time.monotonic() + 60
        while bootstrap is None and time.monotonic() < deadline:
            line = up.stdout.readline()
            assert line, f"cluster up ended early: {lines}"
            lines.append(line)
            if line.startswith("bootstrap: "):
                bootstrap = line.split(" ", 1)[1].strip()
        assert bootstrap is not None and len(bootstrap.split(",")) == 2
        assert any(line.startswith("[broker 2] ") for line in lines)
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "tidelog.cli",
                "cluster",
                "status",
                "--bootstrap-server",
                bootstrap.split(",")[1],
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert "broker 1 at 127.0.0.1:" in status and "broker 2 at 127.0.0.1:" in status
        first = bootstrap.split(",")[0]

        def cli(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "tidelog.cli", *args, "--bootstrap-server", first],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        cli("topics", "create", "up", "--partitions", "4")
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i in range(100):
            producer.produce("up", key=b"%d" % i, value=b"v%d" % i)
        assert producer.flush(30) == 0
        got = {value for _, value in consume_group(bootstrap, "up", "g", 100)}
        assert got == {b"v%d" % i for i in range(100)}
        # `topics describe` asks each partition's leader for its offsets.
        rows = [
            line.split("\t") for line in cli("topics", "describe", "up").splitlines() if "Offsets:" in line
        ]
        leaders = {row[3] for row in rows}
        assert leaders == {"Leader: 1", "Leader: 2"}, rows
        assert sum(int(row[6].rsplit("..", 1)[1]) for row in rows) == 100
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=90)
    assert up.returncode == 0, rest
    assert "cluster stopped (broker exit codes [0, 0])" in rest


def test_acknowledged_records_survive_a_sigkilled_cluster_broker(tmp_path, etcd):
    """A broker of a cluster killed (SIGKILL) while a client produces acks=all to it: once
    etcd has let its registration lapse it starts again on its data, registers, leads its
    partition again, and every record it acknowledged is there, once, in order."""
    cluster = uuid.uuid4().hex[:8]
    p1, port1 = member(tmp_path, etcd, 1, cluster, "--set", "log.flush.interval.messages=1")
    acked: dict[int, bytes] = {}
    w = Wire(f"127.0.0.1:{port1}")
    try:
        assert create_topic(w, "killed", 1) == ec.NONE
        for i in range(200):
            if i == 150:
                p1.send_signal(signal.SIGKILL)
            try:
                code, offset = produce_one(w, "killed", b"r%d" % i)
            except (AssertionError, OSError):
                break  # the connection died with the broker: that produce was not acknowledged
            if code == ec.NONE:
                acked[offset] = b"r%d" % i
    finally:
        w.close()
        p1.wait(30)
    assert len(acked) >= 150
    poll_until(lambda: not registered(etcd, cluster, 1), "the killed broker's lease to lapse", 15)
    p1, port1 = member(tmp_path, etcd, 1, cluster)
    try:
        poll_until(lambda: produce_one_ok(port1, "killed"), "the restarted broker to lead", 30)
        stored = read_all(f"127.0.0.1:{port1}", "killed")
        assert {o: v for o, v in stored.items() if o in acked} == acked
        values = [v for v in stored.values() if v != b"probe"]
        assert len(values) == len(set(values)), "a record is there twice"
    finally:
        assert stop_gracefully(p1) == 0


def produce_one_ok(port: int, topic: str) -> bool:
    w = Wire(f"127.0.0.1:{port}")
    try:
        return produce_one(w, topic, b"probe")[0] == ec.NONE
    finally:
        w.close()
