"""``tidelog produce``: lines from stdin as records (as ``kafka-console-producer``)."""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import Any, TextIO

from tidelog.cli._common import add_bootstrap, check, connect, partitions, run
from tidelog.partitioning import partition_for_key
from tidelog.protocol import _messages as m
from tidelog.records import build_batch


def produce(args: argparse.Namespace, stdin: TextIO, out: TextIO) -> int:
    """Lines from stdin, one record each (KEY<sep>VALUE with --key-separator), sent in batches."""
    acks = {"all": -1, "-1": -1, "1": 1, "0": 0}[args.acks]
    with connect(args) as conn:
        parts = partitions(conn, args.topic)
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
                    check(r.error_code, f"produce to {args.topic}-{r.index}", r.error_message)
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


def add_parser(sub: Any) -> None:
    p = sub.add_parser("produce", help="produce lines from stdin to a topic")
    p.add_argument("topic")
    p.add_argument("--key-separator", default=None, help="split each line into KEY and VALUE at this string")
    p.add_argument("--acks", default="all", choices=["all", "-1", "1", "0"])
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--verbose", action="store_true")
    add_bootstrap(p)
    p.set_defaults(func=lambda a: run(lambda: produce(a, sys.stdin, sys.stdout)))
