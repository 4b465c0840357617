"""``tidelog topics|produce|consume``: Kafka's command-line tools, over the wire protocol."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import uuid
from typing import Any, TextIO

from tidelog.buffers import as_view
from tidelog.client.connection import BrokerError, Connection
from tidelog.client.group import GroupMember, commit_offsets
from tidelog.partitioning import partition_for_key
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AlterConfigOp, ConfigResourceType
from tidelog.records import build_batch, complete_batches, decode_batches


def _check(code: int, what: str, message: str | None = None) -> None:
    if code:
        raise BrokerError(f"{what}: error {code}" + (f" ({message})" if message else ""), code)


def _configs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--config takes KEY=VALUE, not {pair!r}")
        out[key] = value
    return out


def _partitions(conn: Connection, topic: str) -> list[int]:
    meta = conn.send(
        m.MetadataRequest(
            topics=[m.MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=False
        )
    )
    t = meta.topics[0]
    _check(t.error_code, f"topic {topic}")
    return sorted(p.partition_index for p in t.partitions)


def _offsets(conn: Connection, topic: str, partitions: list[int], timestamp: int) -> dict[int, int]:
    L = m.ListOffsetsRequest
    resp = conn.send(
        L(
            replica_id=-1,
            topics=[
                L.ListOffsetsTopic(
                    name=topic,
                    partitions=[
                        L.ListOffsetsTopic.ListOffsetsPartition(partition_index=p, timestamp=timestamp)
                        for p in partitions
                    ],
                )
            ],
        )
    )
    out = {}
    for p in resp.topics[0].partitions:
        _check(p.error_code, f"offsets of {topic}-{p.partition_index}")
        out[p.partition_index] = p.offset
    return out


def topics(args: argparse.Namespace, out: TextIO) -> int:
    with Connection(args.bootstrap_server) as conn:
        if args.action == "create":
            C = m.CreateTopicsRequest
            resp = conn.send(
                C(
                    timeout_ms=30000,
                    topics=[
                        C.CreatableTopic(
                            name=args.topic,
                            num_partitions=args.partitions,
                            replication_factor=args.replication_factor,
                            configs=[
                                C.CreatableTopic.CreatableTopicConfig(name=k, value=v)
                                for k, v in _configs(args.config).items()
                            ],
                        )
                    ],
                )
            )
            r = resp.topics[0]
            _check(r.error_code, f"create {args.topic}", r.error_message)
            out.write(f"Created topic {args.topic}.\n")
        elif args.action == "list":
            meta = conn.send(m.MetadataRequest(topics=None))
            for t in sorted(meta.topics, key=lambda t: t.name):
                if not (args.exclude_internal and t.is_internal):
                    out.write(f"{t.name}\n")
        elif args.action == "describe":
            req_topics = (
                None if args.topic is None else [m.MetadataRequest.MetadataRequestTopic(name=args.topic)]
            )
            meta = conn.send(m.MetadataRequest(topics=req_topics, allow_auto_topic_creation=False))
            for t in sorted(meta.topics, key=lambda t: t.name):
                _check(t.error_code, f"topic {t.name}")
                parts = sorted(p.partition_index for p in t.partitions)
                configs = conn.send(
                    m.DescribeConfigsRequest(
                        resources=[
                            m.DescribeConfigsRequest.DescribeConfigsResource(
                                resource_type=ConfigResourceType.TOPIC,
                                resource_name=t.name,
                                configuration_keys=None,
                            )
                        ]
                    )
                )
                explicit = [f"{c.name}={c.value}" for c in configs.results[0].configs if c.config_source == 1]
                out.write(
                    f"Topic: {t.name}\tTopicId: {t.topic_id}\tPartitionCount: {len(parts)}\t"
                    f"ReplicationFactor: 1\tConfigs: {','.join(explicit)}\n"
                )
                start = _offsets(conn, t.name, parts, -2)
                end = _offsets(conn, t.name, parts, -1)
                for p in sorted(t.partitions, key=lambda p: p.partition_index):
                    out.write(
                        f"\tTopic: {t.name}\tPartition: {p.partition_index}\tLeader: {p.leader_id}\t"
                        f"Replicas: {','.join(map(str, p.replica_nodes))}\t"
                        f"Isr: {','.join(map(str, p.isr_nodes))}"
                        f"\tOffsets: {start[p.partition_index]}..{end[p.partition_index]}\n"
                    )
        elif args.action == "alter":
            if args.partitions:
                CP = m.CreatePartitionsRequest
                resp = conn.send(
                    CP(
                        timeout_ms=30000,
                        validate_only=False,
                        topics=[
                            CP.CreatePartitionsTopic(name=args.topic, count=args.partitions, assignments=None)
                        ],
                    )
                )
                _check(resp.results[0].error_code, f"alter {args.topic}", resp.results[0].error_message)
            changes: list[tuple[str, str | None, int]] = [
                (k, v, AlterConfigOp.SET) for k, v in _configs(args.config).items()
            ]
            changes += [(k, None, AlterConfigOp.DELETE) for k in args.delete_config]
            if changes:
                IA = m.IncrementalAlterConfigsRequest
                R = IA.AlterConfigsResource
                resp = conn.send(
                    IA(
                        validate_only=False,
                        resources=[
                            R(
                                resource_type=ConfigResourceType.TOPIC,
                                resource_name=args.topic,
                                configs=[
                                    R.AlterableConfig(name=k, config_operation=op, value=v)
                                    for k, v, op in changes
                                ],
                            )
                        ],
                    )
                )
                r = resp.responses[0]
                _check(r.error_code, f"alter {args.topic}", r.error_message)
            out.write(f"Altered topic {args.topic}.\n")
        elif args.action == "delete":
            D = m.DeleteTopicsRequest
            by_name = D.DeleteTopicState(name=args.topic, topic_id=uuid.UUID(int=0))  # v6+
            resp = conn.send(D(topic_names=[args.topic], topics=[by_name], timeout_ms=30000))
            r = resp.responses[0]
            _check(r.error_code, f"delete {args.topic}", r.error_message)
            out.write(f"Deleted topic {args.topic}.\n")
    return 0


def produce(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    """Lines from stdin, one record each (KEY<sep>VALUE with --key-separator), sent in batches."""
    acks = {"all": -1, "-1": -1, "1": 1, "0": 0}[args.acks]
    with Connection(args.bootstrap_server) as conn:
        parts = _partitions(conn, args.topic)
        round_robin = itertools.cycle(parts)
        pending: dict[int, list[tuple[bytes | None, bytes]]] = {}
        sent = 0

        def flush() -> None:
            P = m.ProduceRequest
            data = [
                P.TopicProduceData.PartitionProduceData(
                    index=p, records=build_batch(recs, now_ms=int(time.time() * 1000))
                )
                for p, recs in sorted(pending.items())
            ]
            resp = conn.send(
                P(
                    acks=acks,
                    timeout_ms=30000,
                    topic_data=[P.TopicProduceData(name=args.topic, partition_data=data)],
                ),
                expect_response=acks != 0,
            )
            if resp is not None:
                for r in resp.responses[0].partition_responses:
                    _check(r.error_code, f"produce to {args.topic}-{r.index}", r.error_message)
            pending.clear()

        count = 0
        for line in stdin:
            line = line.rstrip("\n")
            key: bytes | None = None
            value = line
            if args.key_separator:
                k, sep, v = line.partition(args.key_separator)
                if sep:
                    key, value = k.encode(), v
            p = partition_for_key(key, len(parts)) if key is not None else next(round_robin)
            pending.setdefault(p, []).append((key, value.encode()))
            count += 1
            if count % args.batch_size == 0:
                flush()
        if pending:
            flush()
        sent = count
    out.write(f"Produced {sent} records to {args.topic}.\n") if args.verbose else None
    return 0


def consume(args: argparse.Namespace, out: TextIO) -> int:
    """Prints records (values; KEY<sep>VALUE with --print-key) until --max-messages or idle.
    With --group, partitions come from the group and positions from its committed offsets,
    which are committed again on the way out."""
    printed = 0
    with Connection(args.bootstrap_server) as conn:
        all_parts = _partitions(conn, args.topic)
        member = GroupMember(conn, args.group, args.topic, len(all_parts)) if args.group else None

        def assign() -> tuple[list[int], dict[int, int]]:
            if member is None:
                parts = all_parts if args.partition is None else [args.partition]
                committed: dict[int, int] = {}
            else:
                parts = member.join()
                committed = member.committed(parts) if parts else {}
            start = _offsets(conn, args.topic, parts, -2 if args.from_beginning else -1) if parts else {}
            return parts, {p: committed[p] if committed.get(p, -1) >= 0 else start[p] for p in parts}

        parts, position = assign()
        last_beat = time.monotonic()
        idle_deadline = time.monotonic() + args.timeout_ms / 1000
        try:
            while args.max_messages is None or printed < args.max_messages:
                got_any = False
                for rec in _fetch(conn, args.topic, parts, position) if parts else ():
                    got_any = True
                    position[rec[0]] = rec[1].offset + 1
                    value = (rec[1].value or b"").decode(errors="replace")
                    if args.print_key:
                        out.write(
                            f"{(rec[1].key or b'').decode(errors='replace')}{args.key_separator}{value}\n"
                        )
                    else:
                        out.write(f"{value}\n")
                    printed += 1
                    if args.max_messages is not None and printed >= args.max_messages:
                        break
                out.flush()
                if member is not None and time.monotonic() - last_beat > 1:
                    last_beat = time.monotonic()
                    if member.heartbeat():  # a rebalance (or we were dropped): commit, rejoin
                        member.commit(position)
                        parts, position = assign()
                if not parts:
                    time.sleep(0.2)  # no partitions of ours: only heartbeats until the deadline
                if got_any:
                    idle_deadline = time.monotonic() + args.timeout_ms / 1000
                elif time.monotonic() > idle_deadline:
                    break
        finally:
            if member is not None:
                member.commit(position)
                member.leave()
    return 0


def _fetch(conn: Connection, topic: str, parts: list[int], position: dict[int, int]) -> list[tuple[int, Any]]:
    """One fetch of every partition from its position: (partition, Record) in order."""
    F = m.FetchRequest
    resp = conn.send(
        F(
            replica_id=-1,
            max_wait_ms=500,
            min_bytes=1,
            max_bytes=8 << 20,
            isolation_level=0,
            topics=[
                F.FetchTopic(
                    topic=topic,
                    partitions=[
                        F.FetchTopic.FetchPartition(
                            partition=p, fetch_offset=position[p], partition_max_bytes=1 << 20
                        )
                        for p in parts
                    ],
                )
            ],
        )
    )
    out = []
    for t in resp.responses:
        for p in t.partitions:
            _check(p.error_code, f"fetch {topic}-{p.partition_index}")
            if p.records:
                recs = decode_batches(complete_batches(as_view(p.records)), position[p.partition_index])
                out += [(p.partition_index, r) for r in recs]
    return out


def add_commands(sub: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bootstrap-server", default="127.0.0.1:9092")

    t = sub.add_parser("topics", help="create, list, describe, alter or delete topics")
    t.add_argument("action", choices=["create", "list", "describe", "alter", "delete"])
    t.add_argument("topic", nargs="?")
    t.add_argument("--partitions", type=int, default=None)
    t.add_argument("--replication-factor", type=int, default=-1)
    t.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--delete-config", action="append", default=[], metavar="KEY")
    t.add_argument("--exclude-internal", action="store_true", help="list: leave out internal topics")
    common(t)
    t.set_defaults(func=lambda a: _run(lambda: topics(_need_topic(a), sys.stdout)))

    p = sub.add_parser("produce", help="produce lines from stdin to a topic")
    p.add_argument("topic")
    p.add_argument("--key-separator", default=None, help="split each line into KEY and VALUE at this string")
    p.add_argument("--acks", default="all", choices=["all", "-1", "1", "0"])
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--verbose", action="store_true")
    common(p)
    p.set_defaults(func=lambda a: _run(lambda: produce(a, sys.stdin, sys.stdout)))

    c = sub.add_parser("consume", help="print a topic's records")
    c.add_argument("topic")
    c.add_argument("--from-beginning", action="store_true")
    c.add_argument("--group", default=None)
    c.add_argument("--partition", type=int, default=None)
    c.add_argument("--max-messages", type=int, default=None)
    c.add_argument("--timeout-ms", type=int, default=10_000, help="stop after this long without records")
    c.add_argument("--print-key", action="store_true")
    c.add_argument("--key-separator", default="\t")
    common(c)
    c.set_defaults(func=lambda a: _run(lambda: consume(a, sys.stdout)))
    add_group_commands(sub)


def _need_topic(args: argparse.Namespace) -> argparse.Namespace:
    if args.action not in ("list", "describe") and not args.topic:
        raise SystemExit(f"topics {args.action} needs a topic name")
    if args.action == "create" and args.partitions is None:
        args.partitions = -1
    return args


def _run(f: Any) -> int:
    try:
        return int(f())
    except BrokerError as e:
        sys.stderr.write(f"tidelog: {e}\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"tidelog: cannot reach the broker: {e}\n")
        return 1


def _assignment(data: bytes) -> dict[str, list[int]]:
    """A consumer member's assignment bytes (ConsumerProtocolAssignment) as {topic: partitions}."""
    if len(data) < 2:
        return {}
    try:
        version = min(int.from_bytes(data[:2], "big", signed=True), 3)
        a = m.ConsumerProtocolAssignment.decode(data[2:], version)
    except ValueError:
        return {}
    return {tp.topic: sorted(tp.partitions) for tp in a.assigned_partitions}


def _committed(conn: Connection, group: str) -> dict[tuple[str, int], int]:
    resp = conn.send(
        m.OffsetFetchRequest(group_id=group, topics=None), version=min(conn.versions.get(9, 7), 7)
    )
    return {(t.name, p.partition_index): p.committed_offset for t in resp.topics for p in t.partitions}


def groups(args: argparse.Namespace, out: TextIO) -> int:
    with Connection(args.bootstrap_server) as conn:
        if args.action == "list":
            for g in sorted(conn.send(m.ListGroupsRequest()).groups, key=lambda g: g.group_id):
                out.write(f"{g.group_id}\t{g.group_state}\n")
            return 0
        if not args.group:
            raise SystemExit(f"groups {args.action} needs a group id")
        described = conn.send(m.DescribeGroupsRequest(groups=[args.group])).groups[0]
        if args.action == "describe":
            owners: dict[tuple[str, int], Any] = {}
            for mb in described.members:
                for topic, parts in _assignment(bytes(mb.member_assignment)).items():
                    for p in parts:
                        owners[(topic, p)] = mb
            committed = _committed(conn, args.group)
            keys = sorted(set(committed) | set(owners))
            ends: dict[tuple[str, int], int] = {}
            for topic in sorted({t for t, _ in keys}):
                parts = sorted(p for t, p in keys if t == topic)
                for p, off in _offsets(conn, topic, parts, -1).items():
                    ends[(topic, p)] = off
            out.write(
                f"Group {args.group} is {described.group_state} with {len(described.members)} member(s)"
                f" (protocol {described.protocol_data or '-'})\n"
            )
            out.write("TOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tCONSUMER-ID\tHOST\tCLIENT-ID\n")
            for key in keys:
                cur = committed.get(key, -1)
                end = ends.get(key, -1)
                lag = end - cur if cur >= 0 else "-"
                mb = owners.get(key)
                who = f"{mb.member_id}\t{mb.client_host}\t{mb.client_id}" if mb else "-\t-\t-"
                out.write(f"{key[0]}\t{key[1]}\t{cur if cur >= 0 else '-'}\t{end}\t{lag}\t{who}\n")
            return 0
        # reset-offsets
        if described.members or described.group_state not in ("Empty", "Dead"):
            raise BrokerError(f"group {args.group} is {described.group_state}: stop its consumers first")
        parts = _partitions(conn, args.topic)
        if args.to_earliest:
            targets = _offsets(conn, args.topic, parts, -2)
        elif args.to_latest:
            targets = _offsets(conn, args.topic, parts, -1)
        elif args.to_datetime is not None:
            targets = _offsets(conn, args.topic, parts, args.to_datetime)
            latest = _offsets(conn, args.topic, parts, -1)
            targets = {p: (o if o >= 0 else latest[p]) for p, o in targets.items()}
        elif args.to_offset is not None:
            targets = dict.fromkeys(parts, args.to_offset)
        else:
            raise SystemExit("reset-offsets needs --to-earliest, --to-latest, --to-offset or --to-datetime")
        for p, off in sorted(targets.items()):
            out.write(f"{args.topic}\t{p}\t{off}\n")
        if not args.execute:
            out.write("(dry run: add --execute to commit these offsets)\n")
            return 0
        commit_offsets(conn, args.group, args.topic, targets)
        out.write(f"Reset {len(targets)} partition(s) of group {args.group}.\n")
    return 0


def add_group_commands(sub: Any) -> None:
    g = sub.add_parser("groups", help="list and describe consumer groups, reset their offsets")
    g.add_argument("action", choices=["list", "describe", "reset-offsets"])
    g.add_argument("group", nargs="?")
    g.add_argument("--topic")
    g.add_argument("--to-earliest", action="store_true")
    g.add_argument("--to-latest", action="store_true")
    g.add_argument("--to-offset", type=int, default=None)
    g.add_argument("--to-datetime", type=int, default=None, help="a timestamp in ms since the epoch")
    g.add_argument("--execute", action="store_true")
    g.add_argument("--bootstrap-server", default="127.0.0.1:9092")
    g.set_defaults(func=lambda a: _run(lambda: groups(a, sys.stdout)))
