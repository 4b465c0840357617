"""Broker end-to-end benchmarks with librdkafka (confluent-kafka), on both engines:

    python -m benches.broker [--smoke] [--json .benchmarks/broker.json]

Per engine: start-up time to the first ApiVersions answer, idle RSS, one producer process's
throughput (100 B and 1 KiB values, acks=1 and acks=all, linger 5 ms) with the broker's peak
RSS meanwhile, and consumer throughput with fetches sent by sendfile and by copying.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import tidelog
from tidelog.pytest_plugin import serve_process


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024  # type: ignore[union-attr]


def api_versions_answered(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(bytes.fromhex("0000000e00120000000000010004626e6368"))
            return len(s.recv(4)) == 4
    except OSError:
        return False


@contextmanager
def broker(
    engine: str, *settings: str, data: str | None = None
) -> Iterator[tuple[subprocess.Popen[str], int, float]]:
    """A `tidelog serve` process on ``data`` (default: a new directory); yields (process,
    port, seconds to the first ApiVersions answer)."""
    data = data or tempfile.mkdtemp(prefix="tidelog-bench-")
    sets = [x for s in settings for x in ("--set", s)]
    start = time.perf_counter()
    proc, port = serve_process(data, "--engine", engine, "--log-level", "warning", *sets)
    try:
        while not api_versions_answered(port):
            if proc.poll() is not None:
                raise RuntimeError("broker exited")
        yield proc, port, time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(30)


def produce(
    port: int, topic: str, n: int, size: int, acks: str, pid: int, conf: dict[str, object] | None = None
) -> tuple[float, float]:
    """(messages/s, peak broker RSS in MB) for one producer (``conf``: more client settings,
    such as security ones)."""
    p = Producer(
        {
            **(conf or {}),
            "bootstrap.servers": f"127.0.0.1:{port}",
            "acks": acks,
            "linger.ms": 5,
            "batch.size": 1 << 20,
            "queue.buffering.max.messages": 1_000_000,
            "enable.idempotence": acks == "all",
        }
    )
    value = b"x" * size
    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak[0] = max(peak[0], rss_mb(pid))

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    start = time.perf_counter()
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=value, key=b"%d" % (i % 1000))
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    return n / elapsed, peak[0]


def produce_latency(port: int, topic: str, per_second: int, seconds: float) -> tuple[float, float]:
    """(p50, p99) in ms from produce to acknowledgement, acks=all and idempotent, one record
    at a time at ``per_second`` (linger 0): the broker's latency, not its throughput."""
    p = Producer(
        {"bootstrap.servers": f"127.0.0.1:{port}", "acks": "all", "enable.idempotence": True, "linger.ms": 0}
    )
    p.produce(topic, b"warm-up")  # the producer id and metadata first, not measured
    assert p.flush(30) == 0
    took: list[float] = []
    start = time.perf_counter()
    for i in range(int(per_second * seconds)):
        while time.perf_counter() < start + i / per_second:
            p.poll(0)
        sent = time.perf_counter()
        p.produce(
            topic, b"x" * 100, on_delivery=lambda e, _m, sent=sent: took.append(time.perf_counter() - sent)
        )
        p.poll(0)
    assert p.flush(30) == 0
    ms = sorted(t * 1000 for t in took)
    return ms[len(ms) // 2], ms[int(len(ms) * 0.99)]


def consume(port: int, topic: str, partitions: int, n: int, conf: dict[str, object] | None = None) -> float:
    c = Consumer(
        {
            **(conf or {}),
            "bootstrap.servers": f"127.0.0.1:{port}",
            "group.id": "bench",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50 << 20,
            "max.partition.fetch.bytes": 8 << 20,
        }
    )
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = 0
    start = time.perf_counter()
    deadline = start + 300
    while got < n and time.perf_counter() < deadline:
        batch = c.consume(10000, 1.0)
        errors = [m.error() for m in batch[-1:] if m.error()]  # errors are rare: look at one per batch
        assert not errors, errors
        got += len(batch)
    elapsed = time.perf_counter() - start
    c.close()
    assert got >= n, f"consumed {got} of {n}"
    return n / elapsed


def consume_kcat(port: int, topic: str, n: int) -> float:
    """librdkafka without Python on the consuming side: kcat reading to the end."""
    start = time.perf_counter()
    out = subprocess.run(
        ["kcat", "-b", f"127.0.0.1:{port}", "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o\n"],
        capture_output=True,
        check=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert out.stdout.count(b"\n") >= n
    return out.stdout.count(b"\n") / elapsed


def create(port: int, topic: str, partitions: int, conf: dict[str, object] | None = None) -> None:
    admin = AdminClient({**(conf or {}), "bootstrap.servers": f"127.0.0.1:{port}"})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(30)


def run(engine: str, smoke: bool) -> dict[str, float]:
    scale = 0.01 if smoke else (1.0 if engine == "rust" else 0.1)
    out: dict[str, float] = {}
    with broker(engine) as (proc, port, startup):
        out["start-up to first ApiVersions answer (s)"] = startup
        time.sleep(0.5)
        out["idle RSS (MB)"] = rss_mb(proc.pid)
        for size, acks in ((100, "1"), (100, "all"), (1024, "1"), (1024, "all")):
            topic = f"p-{size}-{acks}"
            create(port, topic, 4)
            n = max(1000, int((1_000_000 if size == 100 else 300_000) * scale))
            rate, peak = produce(port, topic, n, size, acks, proc.pid)
            out[f"produce {size} B acks={acks} (msg/s)"] = rate
            out[f"peak RSS producing {size} B acks={acks} (MB)"] = peak
        create(port, "latency", 4)
        p50, p99 = produce_latency(port, "latency", 200 if smoke else 2000, 1 if smoke else 5)
        out["produce latency acks=all, 2000 msg/s, p50 (ms)"] = p50
        out["produce latency acks=all, 2000 msg/s, p99 (ms)"] = p99
        n = max(1000, int(1_000_000 * scale))
        out["consume 100 B, sendfile (msg/s)"] = consume(port, "p-100-1", 4, n)
        if shutil.which("kcat"):
            out["consume 100 B with kcat, sendfile (msg/s)"] = consume_kcat(port, "p-100-1", n)
    data = tempfile.mkdtemp(prefix="tidelog-bench-")
    with broker(engine, "tidelog.fetch.zero.copy=false", data=data) as (proc, port, _):
        create(port, "c", 4)
        produce(port, "c", n, 100, "1", proc.pid)
        out["consume 100 B, copying (msg/s)"] = consume(port, "c", 4, n)
    # After a restart the records on disk are CRC-checked as they are first fetched.
    with broker(engine, data=data) as (proc, port, _):
        out["consume 100 B after a restart, checked (msg/s)"] = consume(port, "c", 4, n)
    return out


def both_engines(run: Callable[[str, bool], dict[str, float]]) -> dict[str, dict[str, float]]:
    """Parses ``--smoke`` and ``--json``, runs ``run(engine, smoke)`` for both engines, prints
    their table (and writes the JSON); returns the results by engine."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    # Bytecode as an installed wheel has it (pip compiles at install): a source tree without
    # it, or PYTHONDONTWRITEBYTECODE, would make every broker start-up compile 300 kB first.
    compileall.compile_dir(os.path.dirname(tidelog.__file__), quiet=1)
    results = {engine: run(engine, args.smoke) for engine in ("rust", "python")}
    print("| measurement | rust | pure Python | rust / python |")
    print("|---|---:|---:|---:|")
    for key in results["rust"]:
        r, p = results["rust"][key], results["python"][key]
        print(f"| {key} | {r:,.2f} | {p:,.2f} | {r / p:.2f}x |")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"machine": " ".join(os.uname()), "results": results}, f, indent=1)
    return results


def main() -> int:
    both_engines(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
