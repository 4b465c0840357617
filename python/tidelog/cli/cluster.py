"""``tidelog cluster up|status``: a cluster on this machine (one etcd and N brokers as child
processes, their logs prefixed, all stopped together on Ctrl-C or SIGTERM), and what a
running cluster looks like (brokers, controller, partitions without a leader)."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, TextIO

from tidelog.cli._common import add_bootstrap, connect, run
from tidelog.protocol import _messages as m

#: Seconds each child gets to stop cleanly before it is killed.
STOP_TIMEOUT = 30


def _relay(prefix: str, stream: IO[str], out: TextIO, first_line: list[str], ready: threading.Event) -> None:
    """Copies a child's output to ``out`` with ``prefix``; the first line is also kept in
    ``first_line`` (on a broker's stdout: its "listening on" line)."""
    for line in stream:
        if not ready.is_set():
            first_line.append(line)
            ready.set()
        out.write(f"{prefix} {line}")
        out.flush()
    ready.set()


def _start_relays(prefix: str, proc: subprocess.Popen[str], out: TextIO) -> tuple[list[str], threading.Event]:
    """Relays a child's stdout and stderr; returns its first stdout line (once ready is set)."""
    first: list[str] = []
    ready = threading.Event()
    assert proc.stdout is not None and proc.stderr is not None
    threading.Thread(target=_relay, args=(prefix, proc.stdout, out, first, ready), daemon=True).start()
    unused: list[str] = []
    threading.Thread(
        target=_relay, args=(prefix, proc.stderr, out, unused, threading.Event()), daemon=True
    ).start()
    return first, ready


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def up(args: argparse.Namespace, out: TextIO) -> int:
    from tidelog.cluster.local import EtcdProcess

    data = Path(args.data_dir)
    etcd = None
    if args.etcd:
        url = args.etcd
    else:
        etcd = EtcdProcess(data / "etcd").start()
        url = etcd.url
        out.write(f"etcd at {url} (data in {data / 'etcd'})\n")
    brokers: list[subprocess.Popen[str]] = []
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        addresses = []
        for node in range(1, args.brokers + 1):
            port = args.base_port + node - 1 if args.base_port else 0
            cmd = [sys.executable, "-m", "tidelog.cli", "serve", "--node-id", str(node)]
            cmd += [
                "--listen",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(data / f"broker-{node}"),
                "--etcd",
                url,
            ]
            cmd += ["--cluster-id", args.cluster_id] + (["--engine", args.engine] if args.engine else [])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            brokers.append(proc)
            first, ready = _start_relays(f"[broker {node}]", proc, out)
            ready.wait(60)
            if not first or "listening on" not in first[0]:
                out.write(f"broker {node} did not start (exit code {proc.poll()})\n")
                return 1
            addresses.append(first[0].strip().rsplit(" ", 1)[1])
        out.write(f"bootstrap: {','.join(addresses)}\n")
        out.flush()
        while not stopping.is_set():
            if any(p.poll() is not None for p in brokers):
                out.write("a broker exited; stopping the cluster\n")
                break
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        codes = [_stop(p) for p in brokers]
        if etcd is not None:
            etcd.stop()
        out.write(f"cluster stopped (broker exit codes {codes})\n")
        out.flush()
    return 0 if all(c == 0 for c in codes) else 1


def status(args: argparse.Namespace, out: TextIO) -> int:
    with connect(args) as conn:
        meta = conn.send(m.MetadataRequest(topics=None, allow_auto_topic_creation=False))
    out.write(f"cluster {meta.cluster_id}, controller {meta.controller_id}\n")
    for b in sorted(meta.brokers, key=lambda b: b.node_id):
        out.write(f"broker {b.node_id} at {b.host}:{b.port}\n")
    leaderless = [(t.name, p.partition_index) for t in meta.topics for p in t.partitions if p.leader_id < 0]
    under = [
        (t.name, p.partition_index)
        for t in meta.topics
        for p in t.partitions
        if p.leader_id >= 0 and len(p.isr_nodes) < len(p.replica_nodes)
    ]
    total = sum(len(t.partitions) for t in meta.topics)
    out.write(f"{len(meta.topics)} topics, {total} partitions: ")
    out.write(f"{len(leaderless)} without a leader, {len(under)} under-replicated\n")
    for name, index in leaderless:
        out.write(f"  no leader: {name}-{index}\n")
    for name, index in under:
        out.write(f"  under-replicated: {name}-{index}\n")
    return 0


def add_parser(sub: Any) -> None:
    c = sub.add_parser("cluster", help="run a cluster on this machine, or show a running one")
    actions = c.add_subparsers(dest="action", required=True)
    u = actions.add_parser("up", help="one etcd and N brokers as child processes, until Ctrl-C")
    u.add_argument("--brokers", type=int, default=3)
    u.add_argument("--data-dir", default="./tidelog-cluster")
    u.add_argument(
        "--base-port", type=int, default=9092, help="broker i listens on base+i-1 (0: any free port)"
    )
    u.add_argument("--etcd", help="use this etcd instead of starting one")
    u.add_argument("--cluster-id", default="tidelog")
    u.add_argument("--engine", choices=["auto", "rust", "python"], default=None)
    u.set_defaults(func=lambda a: up(a, sys.stdout))
    s = actions.add_parser("status", help="brokers, the controller, partitions without a leader")
    add_bootstrap(s)
    s.set_defaults(func=lambda a: run(lambda: status(a, sys.stdout)))
