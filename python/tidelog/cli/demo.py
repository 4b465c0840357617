"""``tidelog demo``: the embedded log in a few lines of output."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

import tidelog


def _demo(args: argparse.Namespace) -> int:
    """Appends to an embedded log, reads it back, records a reader position, reopens."""
    directory = args.data_dir or tempfile.mkdtemp(prefix="tidelog-demo-")
    path = os.path.join(directory, "demo-0")
    out = sys.stdout
    with tidelog.Log.open(path, engine=args.engine, segment_bytes=args.segment_bytes) as log:
        out.write(
            f"opened {path} with the {log.engine} engine (offsets {log.start_offset}..{log.end_offset})\n"
        )
        t0 = time.perf_counter()
        first = log.end_offset
        for i in range(args.batches):
            log.append([(f"key-{i}-{j}".encode(), f"value {i}.{j}".encode()) for j in range(args.batch_size)])
        log.flush()
        elapsed = time.perf_counter() - t0
        n = args.batches * args.batch_size
        out.write(
            f"appended {n} records in {args.batches} batches and fsynced in {elapsed * 1000:.1f} ms "
            f"({n / elapsed:,.0f} records/s); log end offset {log.end_offset}, "
            f"{len(log.segments)} segment(s), {log.size_bytes} bytes\n"
        )
        position = log.committed("demo-reader") or first
        records = log.read(position, max_records=3)
        for r in records:
            out.write(f"  read offset {r.offset}: key={r.key!r} value={r.value!r}\n")
        if records:
            log.commit("demo-reader", records[-1].offset + 1)
            out.write(f"committed reader position demo-reader={records[-1].offset + 1}\n")
    with tidelog.Log.open(path, engine=args.engine) as log:
        report = log.recovery_report
        out.write(
            f"reopened: clean shutdown={report.clean_shutdown}, end offset {log.end_offset}, "
            f"demo-reader at {log.committed('demo-reader')}\n"
        )
    return 0


def add_parser(sub: Any) -> None:
    demo = sub.add_parser("demo", help="append to an embedded log, read it back, and say what happened")
    demo.add_argument("--data-dir", help="directory for the log (default: a new temporary directory)")
    demo.add_argument("--engine", choices=["auto", "rust", "python"], default=None)
    demo.add_argument("--batches", type=int, default=100)
    demo.add_argument("--batch-size", type=int, default=1000)
    demo.add_argument("--segment-bytes", type=int, default=1 << 30)
    demo.set_defaults(func=_demo)
