"""The command-line tools against a real broker: topics, produce from stdin, consume."""

from __future__ import annotations

import subprocess
import sys


def tidelog(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tidelog.cli", *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_topics_produce_consume(tidelog_broker):
    bs = ("--bootstrap-server", tidelog_broker.bootstrap)
    r = tidelog("topics", "create", "cli", "--partitions", "3", "--config", "retention.ms=86400000", *bs)
    assert r.returncode == 0, r.stderr
    again = tidelog("topics", "create", "cli", "--partitions", "3", *bs)
    assert again.returncode == 1 and "error 36" in again.stderr  # TOPIC_ALREADY_EXISTS
    assert tidelog("topics", "list", *bs).stdout.split() == ["cli"]
    lines = "".join(f"user{i % 7}:event {i}\n" for i in range(50))
    r = tidelog("produce", "cli", "--key-separator", ":", *bs, stdin=lines)
    assert r.returncode == 0, r.stderr
    desc = tidelog("topics", "describe", "cli", *bs).stdout
    assert "PartitionCount: 3" in desc and "retention.ms=86400000" in desc
    ends = [int(line.rsplit("..", 1)[1]) for line in desc.splitlines() if "Offsets:" in line]
    assert sum(ends) == 50
    r = tidelog(
        "consume",
        "cli",
        "--from-beginning",
        "--max-messages",
        "50",
        "--print-key",
        "--key-separator",
        ":",
        *bs,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted(lines.splitlines())
    r = tidelog("topics", "alter", "cli", "--partitions", "4", "--config", "retention.ms=1000", *bs)
    assert r.returncode == 0, r.stderr
    assert "PartitionCount: 4" in tidelog("topics", "describe", "cli", *bs).stdout
    # A group resumes where it committed: 20, then the other 30 (each exactly once).
    first = tidelog("consume", "cli", "--group", "g", "--from-beginning", "--max-messages", "20", *bs)
    rest = tidelog("consume", "cli", "--group", "g", "--from-beginning", "--timeout-ms", "1500", *bs)
    assert first.returncode == 0 and rest.returncode == 0, first.stderr + rest.stderr
    values = first.stdout.splitlines() + rest.stdout.splitlines()
    assert len(first.stdout.splitlines()) == 20
    assert sorted(values) == sorted(line.split(":", 1)[1] for line in lines.splitlines())
    assert tidelog("topics", "delete", "cli", *bs).returncode == 0
    assert tidelog("topics", "list", *bs).stdout.split() == ["__consumer_offsets"]  # the groups' store
    assert tidelog("topics", "list", "--exclude-internal", *bs).stdout.split() == []


def test_unreachable_broker_is_a_clear_error():
    r = tidelog("topics", "list", "--bootstrap-server", "127.0.0.1:1")
    assert r.returncode == 1 and "cannot reach the broker" in r.stderr


def test_bootstrap_server_takes_a_list_as_kafkas_tools_do(tidelog_broker):
    """``--bootstrap-server`` is a comma-separated list: the first broker that answers is used."""
    r = tidelog("topics", "create", "listed", "--bootstrap-server", f"127.0.0.1:1,{tidelog_broker.bootstrap}")
    assert r.returncode == 0, r.stderr
    r = tidelog("topics", "list", "--bootstrap-server", f" {tidelog_broker.bootstrap} , 127.0.0.1:1")
    assert r.returncode == 0 and "listed" in r.stdout.split(), r.stderr


def test_groups_list_describe_and_reset(tidelog_broker):
    from .group_clients import Member, wait_until
    from .kafka_clients import create_topic, produce

    bs = ("--bootstrap-server", tidelog_broker.bootstrap)
    create_topic("kafka-python", tidelog_broker.bootstrap, "gt", 2)
    produce(
        "kafka-python",
        tidelog_broker.bootstrap,
        "gt",
        [(b"k%d" % i, b"v%d" % i) for i in range(40)],
        "all",
        "none",
    )
    member = Member("kafka-python", tidelog_broker.bootstrap, "cli-group", "gt")
    try:
        wait_until(lambda: len(member.consumed) >= 40, 30, "40 consumed")
        assert tidelog("groups", "list", *bs).stdout.split() == ["cli-group", "Stable"]
        refused = tidelog(
            "groups", "reset-offsets", "cli-group", "--topic", "gt", "--to-earliest", "--execute", *bs
        )
        assert refused.returncode == 1 and "stop its consumers" in refused.stderr
    finally:
        member.close()
    desc = tidelog("groups", "describe", "cli-group", *bs).stdout
    rows = [line.split("\t") for line in desc.splitlines()[2:]]
    assert sorted((r[0], r[1]) for r in rows) == [("gt", "0"), ("gt", "1")]
    assert sum(int(r[2]) for r in rows) == 40 and all(r[4] == "0" for r in rows)  # committed, no lag
    dry = tidelog("groups", "reset-offsets", "cli-group", "--topic", "gt", "--to-earliest", *bs)
    assert "dry run" in dry.stdout
    r = tidelog("groups", "reset-offsets", "cli-group", "--topic", "gt", "--to-earliest", "--execute", *bs)
    assert r.returncode == 0, r.stderr
    desc = tidelog("groups", "describe", "cli-group", *bs).stdout
    assert sum(int(line.split("\t")[4]) for line in desc.splitlines()[2:]) == 40  # all lag again
