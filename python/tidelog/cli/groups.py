"""``tidelog groups list|describe|reset-offsets`` (as ``kafka-consumer-groups``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from tidelog.cli._common import add_bootstrap, connect, offsets, partitions, run
from tidelog.client.connection import BrokerError, Connection
from tidelog.client.group import commit_offsets
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import OffsetSpec


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
    with connect(args) as conn:
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
                for p, off in offsets(conn, topic, parts, OffsetSpec.LATEST).items():
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
        parts = partitions(conn, args.topic)
        if args.to_earliest:
            targets = offsets(conn, args.topic, parts, OffsetSpec.EARLIEST)
        elif args.to_latest:
            targets = offsets(conn, args.topic, parts, OffsetSpec.LATEST)
        elif args.to_datetime is not None:
            targets = offsets(conn, args.topic, parts, args.to_datetime)
            latest = offsets(conn, args.topic, parts, OffsetSpec.LATEST)
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


def add_parser(sub: Any) -> None:
    g = sub.add_parser("groups", help="list and describe consumer groups, reset their offsets")
    g.add_argument("action", choices=["list", "describe", "reset-offsets"])
    g.add_argument("group", nargs="?")
    g.add_argument("--topic")
    g.add_argument("--to-earliest", action="store_true")
    g.add_argument("--to-latest", action="store_true")
    g.add_argument("--to-offset", type=int, default=None)
    g.add_argument("--to-datetime", type=int, default=None, help="a timestamp in ms since the epoch")
    g.add_argument("--execute", action="store_true")
    add_bootstrap(g)
    g.set_defaults(func=lambda a: run(lambda: groups(a, sys.stdout)))
