"""``tidelog consume``: print a topic's records, alone or in a group (as ``kafka-console-consumer``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, TextIO

from tidelog.buffers import as_view
from tidelog.cli._common import add_bootstrap, check, connect, offsets, partitions, run
from tidelog.client.connection import Connection
from tidelog.client.group import GroupMember
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import OffsetSpec
from tidelog.records import complete_batches, decode_batches


def consume(args: argparse.Namespace, out: TextIO) -> int:
    """Prints records (values; KEY<sep>VALUE with --print-key) until --max-messages or idle.
    With --group, partitions come from the group and positions from its committed offsets,
    which are committed again on the way out."""
    printed = 0
    with connect(args) as conn:
        all_parts = partitions(conn, args.topic)
        member = GroupMember(conn, args.group, args.topic, len(all_parts)) if args.group else None

        def assign() -> tuple[list[int], dict[int, int]]:
            if member is None:
                parts = all_parts if args.partition is None else [args.partition]
                committed: dict[int, int] = {}
            else:
                parts = member.join()
                committed = member.committed(parts) if parts else {}
            spec = OffsetSpec.EARLIEST if args.from_beginning else OffsetSpec.LATEST
            start = offsets(conn, args.topic, parts, spec) if parts else {}
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
            check(p.error_code, f"fetch {topic}-{p.partition_index}")
            if p.records:
                recs = decode_batches(complete_batches(as_view(p.records)), position[p.partition_index])
                out += [(p.partition_index, r) for r in recs]
    return out


def add_parser(sub: Any) -> None:
    c = sub.add_parser("consume", help="print a topic's records")
    c.add_argument("topic")
    c.add_argument("--from-beginning", action="store_true")
    c.add_argument("--group", default=None)
    c.add_argument("--partition", type=int, default=None)
    c.add_argument("--max-messages", type=int, default=None)
    c.add_argument("--timeout-ms", type=int, default=10_000, help="stop after this long without records")
    c.add_argument("--print-key", action="store_true")
    c.add_argument("--key-separator", default="\t")
    add_bootstrap(c)
    c.set_defaults(func=lambda a: run(lambda: consume(a, sys.stdout)))
