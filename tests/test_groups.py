"""Consumer groups with real clients: rebalancing as members come and go, committed offsets,
persistence across restarts, static membership, mixed clients, bad requests."""

from __future__ import annotations

import os
import time

import pytest

from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process, start_broker

from .conftest import stop_gracefully
from .group_clients import GROUP_CLIENTS, Member, notify, wait_until
from .kafka_clients import create_topic, produce
from .wire import Wire, join_request

FAST = {"group.initial.rebalance.delay.ms": "0"}


@pytest.fixture
def broker(tmp_path):
    b = start_broker(tmp_path / "broker", **FAST)
    yield b
    b.stop()


def sizes(members: list[Member]) -> list[int]:
    return sorted(len(mb.assignment) for mb in members)


def covers_all(members: list[Member], partitions: int) -> bool:
    got = [p for mb in members for p in mb.assignment]
    return sorted(got) == list(range(partitions))


@pytest.mark.parametrize("client", GROUP_CLIENTS)
def test_the_classic_scenario(broker, client):
    create_topic("kafka-python", broker.bootstrap, "T1", 4)
    members: list[Member] = []
    try:
        for count, expected in ((1, [4]), (2, [2, 2]), (4, [1, 1, 1, 1]), (5, [0, 1, 1, 1, 1])):
            while len(members) < count:
                members.append(Member(client, broker.bootstrap, "G1", "T1"))
            wait_until(
                lambda expected=expected: sizes(members) == expected and covers_all(members, 4),
                60,
                f"{count} members to hold {expected}",
            )
    finally:
        for mb in members:
            mb.close()


def test_clean_close_rebalances_at_once_and_offsets_resume(broker):
    create_topic("confluent-kafka", broker.bootstrap, "T2", 4)
    produce(
        "confluent-kafka",
        broker.bootstrap,
        "T2",
        [(b"k%d" % i, b"v%d" % i) for i in range(400)],
        "all",
        "none",
    )
    a = Member("confluent-range", broker.bootstrap, "G2", "T2")
    b = Member("confluent-range", broker.bootstrap, "G2", "T2")
    try:
        wait_until(lambda: sizes([a, b]) == [2, 2] and covers_all([a, b], 4), 30, "two members")
        wait_until(lambda: len(a.consumed) + len(b.consumed) >= 400, 30, "all 400 consumed")
        a.close()
        took = wait_until(lambda: len(b.assignment) == 4, 30, "the survivor to own all partitions")
        assert took < 5, f"a clean close should rebalance at once, took {took:.1f}s"
    finally:
        a.close()
        b.close()
    # Auto-committed offsets: a new member of the group starts after what was consumed.
    produce("confluent-kafka", broker.bootstrap, "T2", [(b"k", b"late")], "all", "none")
    c = Member("confluent-range", broker.bootstrap, "G2", "T2")
    try:
        wait_until(lambda: any(v == b"late" for *_, v in c.consumed), 30, "the late message")
        assert len(c.consumed) < 400, "the group re-read from the beginning instead of its committed offsets"
    finally:
        c.close()


def test_two_groups_each_receive_every_message(broker):
    create_topic("kafka-python", broker.bootstrap, "T3", 3)
    sent = [(b"k%d" % i, b"v%d" % i) for i in range(300)]
    produce("kafka-python", broker.bootstrap, "T3", sent, "all", "none")
    g1 = Member("kafka-python", broker.bootstrap, "GA", "T3")
    g2 = Member("confluent-range", broker.bootstrap, "GB", "T3")
    try:
        for mb in (g1, g2):
            wait_until(lambda mb=mb: len(mb.consumed) >= 300, 30, "every message in each group")
            assert sorted(v for *_, v in mb.consumed) == sorted(v for _, v in sent)
    finally:
        g1.close()
        g2.close()


def test_mixed_librdkafka_and_kafka_python_members(broker):
    create_topic("kafka-python", broker.bootstrap, "T4", 4)
    a = Member("confluent-range", broker.bootstrap, "GM", "T4")
    b = Member("kafka-python", broker.bootstrap, "GM", "T4")
    try:
        wait_until(lambda: sizes([a, b]) == [2, 2] and covers_all([a, b], 4), 30, "a mixed group of two")
    finally:
        a.close()
        b.close()


def test_committed_offsets_and_groups_survive_a_restart(tmp_path):
    data = tmp_path / "broker"
    b = start_broker(data, **FAST)
    try:
        create_topic("kafka-python", b.bootstrap, "T5", 2)
        produce(
            "kafka-python", b.bootstrap, "T5", [(b"k%d" % i, b"v%d" % i) for i in range(100)], "all", "none"
        )
        mb = Member("kafka-python", b.bootstrap, "GR", "T5")
        wait_until(lambda: len(mb.consumed) >= 100, 30, "100 consumed")
        mb.close()  # commits on close
    finally:
        b.stop()
    b = start_broker(data, **FAST)
    try:
        w = Wire(b.bootstrap)
        fetched = w.request(m.OffsetFetchRequest(group_id="GR", topics=None), 7)
        committed = {p.partition_index: p.committed_offset for t in fetched.topics for p in t.partitions}
        assert sum(committed.values()) == 100
        w.close()
        produce("kafka-python", b.bootstrap, "T5", [(b"x", b"after-restart")], "all", "none")
        mb = Member("kafka-python", b.bootstrap, "GR", "T5")
        wait_until(lambda: any(v == b"after-restart" for *_, v in mb.consumed), 30, "the new message")
        assert [v for *_, v in mb.consumed] == [b"after-restart"]
        mb.close()
    finally:
        b.stop()


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(tmp_path):
    b = start_broker(tmp_path / "broker", **FAST)
    try:
        create_topic("kafka-python", b.bootstrap, "T6", 4)
        a = Member(
            "confluent-range", b.bootstrap, "GS", "T6", instance_id="static-a", session_timeout_ms=15000
        )
        other = Member(
            "confluent-range", b.bootstrap, "GS", "T6", instance_id="static-b", session_timeout_ms=15000
        )
        wait_until(lambda: sizes([a, other]) == [2, 2], 30, "two static members")
        before = a.assignment
        group = b.broker.groups.groups["GS"]
        generation = group.generation
        a.close()  # a static member does not leave on close
        a = Member(
            "confluent-range", b.bootstrap, "GS", "T6", instance_id="static-a", session_timeout_ms=15000
        )
        wait_until(lambda: a.assignment == before, 30, "the restarted static member's partitions")
        assert group.generation == generation, "the restart caused a rebalance"
        a.close()
        other.close()
    finally:
        b.stop()


def test_bad_group_requests_get_precise_errors(broker):
    w = Wire(broker.bootstrap)
    J = m.JoinGroupRequest
    proto = [J.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")]

    def join(group: str, session: int) -> m.JoinGroupResponse:
        return w.request(
            J(
                group_id=group,
                session_timeout_ms=session,
                rebalance_timeout_ms=1000,
                member_id="",
                protocol_type="consumer",
                protocols=proto,
            ),
            7,
        )

    assert join("", 10000).error_code == 24  # INVALID_GROUP_ID
    assert join("G", 1).error_code == 26  # INVALID_SESSION_TIMEOUT
    assert join("G", 10**9).error_code == 26
    first = join("G", 10000)
    assert first.error_code == 79 and first.member_id  # MEMBER_ID_REQUIRED
    OC = m.OffsetCommitRequest

    def commit(member: str, generation: int) -> int:
        r = w.request(
            OC(
                group_id="G",
                generation_id_or_member_epoch=generation,
                member_id=member,
                topics=[
                    OC.OffsetCommitRequestTopic(
                        name="T7",
                        partitions=[
                            OC.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                                partition_index=0, committed_offset=5, committed_metadata=None
                            )
                        ],
                    )
                ],
            ),
            8,
        )
        return r.topics[0].partitions[0].error_code

    create_topic("kafka-python", broker.bootstrap, "T7", 1)
    good = Member("kafka-python", broker.bootstrap, "G", "T7")
    try:
        wait_until(lambda: len(good.assignment) == 1, 30, "a real member")
        assert commit("nobody", 1) == 25  # UNKNOWN_MEMBER_ID
        real = next(iter(broker.broker.groups.groups["G"].members))
        assert commit(real, 999) == 22  # ILLEGAL_GENERATION
        assert commit("", -1) == 25  # an assign-only commit into a group with members
        assert len(good.assignment) == 1  # the healthy member is undisturbed
    finally:
        good.close()
    assert commit("", -1) == 0  # the group is empty now: assign-only commits are accepted
    w.close()


def test_sigkilled_member_hands_over_after_the_session_timeout(broker):
    import signal
    import subprocess
    import sys
    import threading
    from pathlib import Path

    create_topic("confluent-kafka", broker.bootstrap, "T8", 4)
    produce(
        "confluent-kafka",
        broker.bootstrap,
        "T8",
        [(b"k%d" % i, b"a%d" % i) for i in range(400)],
        "all",
        "none",
    )
    script = Path(__file__).with_name("group_member_process.py")
    procs = {}
    lines: dict[str, list[list[str]]] = {"a": [], "b": []}

    def reader(name: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines[name].append(line.split())
            notify()

    try:
        for name in ("a", "b"):
            procs[name] = subprocess.Popen(
                [sys.executable, str(script), broker.bootstrap, "GK", "T8"], stdout=subprocess.PIPE, text=True
            )
            threading.Thread(target=reader, args=(name, procs[name]), daemon=True).start()

        def assignment(name: str) -> list[int]:
            return next(([int(x) for x in ln[1:]] for ln in reversed(lines[name]) if ln[0] == "A"), [])

        wait_until(lambda: len(assignment("a")) == 2 and len(assignment("b")) == 2, 30, "a 2 + 2 split")
        wait_until(lambda: sum(ln[0] == "M" for n in lines for ln in lines[n]) >= 400, 30, "the first 400")
        a_parts = assignment("a")
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait(10)
        # b may have owned every partition before a joined (reading them from 0): only what b
        # reads after a's death shows where the hand-over resumed.
        b_mark = len(lines["b"])
        # What a committed before it died, as the broker has it (a may die before reporting a commit).
        w = Wire(broker.bootstrap)
        fetched = w.request(m.OffsetFetchRequest(group_id="GK", topics=None), 7)
        w.close()
        committed = {p.partition_index: p.committed_offset for t in fetched.topics for p in t.partitions}
        produce(
            "confluent-kafka",
            broker.bootstrap,
            "T8",
            [(b"k%d" % i, b"b%d" % i) for i in range(400)],
            "all",
            "none",
        )
        took = wait_until(lambda: len(assignment("b")) == 4, 30, "b to take over all partitions")
        assert took > 2, "the dead member's partitions moved before its session could time out"

        def seen() -> set[tuple[int, int]]:
            return {(int(ln[1]), int(ln[2])) for n in lines for ln in lines[n] if ln[0] == "M"}

        try:
            wait_until(lambda: len(seen()) == 800, 40, "every message consumed by a or b")
        except AssertionError:
            ends = {p: max((o for q, o in seen() if q == p), default=-1) for p in range(4)}
            raise AssertionError(
                f"seen {len(seen())}; last offsets {ends}; a committed {committed}; "
                f"b assignment {assignment('b')}; b tail {lines['b'][-3:]}"
            ) from None
        for p in a_parts:
            offsets_b = [int(ln[2]) for ln in lines["b"][b_mark:] if ln[0] == "M" and int(ln[1]) == p]
            # b resumes exactly at a's last commit: at-least-once, duplicates only after it.
            assert min(offsets_b) == max(committed.get(p, 0), 0), (p, committed, offsets_b[:5])
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait(10)


def test_consumer_offsets_stay_bounded_and_expire(tmp_path):
    import time

    settings = {
        **FAST,
        "offsets.topic.num.partitions": "1",
        "offsets.topic.segment.bytes": "20000",
        "tidelog.offsets.compact.bytes": "40000",
    }
    b = start_broker(tmp_path / "broker", **settings)
    OC = m.OffsetCommitRequest
    try:
        create_topic("kafka-python", b.bootstrap, "T9", 4)
        w = Wire(b.bootstrap)
        for i in range(1500):
            r = w.request(
                OC(
                    group_id=f"g{i % 3}",
                    generation_id_or_member_epoch=-1,
                    member_id="",
                    topics=[
                        OC.OffsetCommitRequestTopic(
                            name="T9",
                            partitions=[
                                OC.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                                    partition_index=i % 4, committed_offset=i, committed_metadata="m"
                                )
                            ],
                        )
                    ],
                ),
                8,
            )
            assert r.topics[0].partitions[0].error_code == 0
        w.close()
        offsets_log = b.broker.replicas.partition("__consumer_offsets", 0).log
        assert offsets_log.size_bytes < 40000 + 20000, "__consumer_offsets grew without bound"
        assert offsets_log.start_offset > 0
    finally:
        b.stop()
    b = start_broker(tmp_path / "broker", **settings)
    try:
        w = Wire(b.bootstrap)
        latest = {(f"g{i % 3}", i % 4): i for i in range(1500)}
        for group in ("g0", "g1", "g2"):
            got = w.request(m.OffsetFetchRequest(group_id=group, topics=None), 7)
            have = {(group, p.partition_index): p.committed_offset for t in got.topics for p in t.partitions}
            assert have == {k: v for k, v in latest.items() if k[0] == group}
        # Offsets of empty groups expire after offsets.retention.minutes (here: as if days passed).
        assert b.call(b.broker.groups.expire_offsets, int(time.time() * 1000) + 30 * 24 * 3600 * 1000) == 12
        got = w.request(m.OffsetFetchRequest(group_id="g0", topics=None), 7)
        assert got.topics == []
        w.close()
    finally:
        b.stop()


def test_a_topic_gaining_partitions_rebalances_the_group(broker):
    create_topic("kafka-python", broker.bootstrap, "T10", 2)
    a = Member("confluent-range", broker.bootstrap, "GP", "T10")
    b = Member("confluent-range", broker.bootstrap, "GP", "T10")
    try:
        wait_until(lambda: sizes([a, b]) == [1, 1], 30, "one partition each")
        w = Wire(broker.bootstrap)
        CP = m.CreatePartitionsRequest
        r = w.request(
            CP(
                timeout_ms=5000,
                validate_only=False,
                topics=[CP.CreatePartitionsTopic(name="T10", count=4, assignments=None)],
            ),
            3,
        )
        assert r.results[0].error_code == 0
        w.close()
        wait_until(lambda: sizes([a, b]) == [2, 2] and covers_all([a, b], 4), 30, "two partitions each")
    finally:
        a.close()
        b.close()


def test_a_duplicate_static_member_is_fenced(broker):
    w = Wire(broker.bootstrap)
    J = m.JoinGroupRequest
    proto = [J.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")]

    def join(member_id: str) -> m.JoinGroupResponse:
        return w.request(
            J(
                group_id="GF",
                session_timeout_ms=10000,
                rebalance_timeout_ms=1000,
                member_id=member_id,
                group_instance_id="instance-1",
                protocol_type="consumer",
                protocols=proto,
            ),
            7,
        )

    first = join("")
    assert first.error_code == 0 and first.member_id.startswith("instance-1-")
    assert join("someone-else").error_code == 82  # FENCED_INSTANCE_ID
    assert broker.broker.groups.groups["GF"].static == {"instance-1": first.member_id}
    w.close()


def test_members_joining_at_once_on_a_fresh_broker(broker, caplog):
    caplog.set_level("ERROR", logger="tidelog.broker")
    create_topic("kafka-python", broker.bootstrap, "T11", 6)
    members = [Member("confluent-range", broker.bootstrap, "GN", "T11") for _ in range(6)]
    try:
        wait_until(
            lambda: sizes(members) == [1] * 6 and covers_all(members, 6), 30, "six members of one each"
        )
    finally:
        for mb in members:
            mb.close()
    errors = [
        r.getMessage() for r in caplog.records if r.levelname == "ERROR" and r.name.startswith("tidelog")
    ]
    assert not errors, errors


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc to read a process's CPU time")
def test_waiting_out_a_rebalance_costs_the_broker_no_cpu(tmp_path):
    """A join waits out group.initial.rebalance.delay.ms on the broker's clock without
    spinning: a wait once computed on Trio's clock from the broker's clock ended at once,
    every time, and burnt a core for the whole delay (starving clients that share it)."""
    proc, port = serve_process(tmp_path / "b", "--set", "group.initial.rebalance.delay.ms=3000")
    w = Wire(f"127.0.0.1:{port}")

    def join(member_id: str) -> m.JoinGroupResponse:
        return w.request(join_request("idle", member_id), 7)

    try:
        first = join("")
        assert first.error_code == ec.MEMBER_ID_REQUIRED
        before, start = _cpu_seconds(proc.pid), time.monotonic()
        assert join(first.member_id).error_code == ec.NONE
        took, used = time.monotonic() - start, _cpu_seconds(proc.pid) - before
        assert took >= 2.5, "the initial rebalance delay was not waited out"
        assert used < took / 4, f"the broker used {used:.1f}s of CPU in a {took:.1f}s wait"
    finally:
        w.close()
        assert stop_gracefully(proc) == 0
