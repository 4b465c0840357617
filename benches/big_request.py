"""One client's huge requests against everyone else's latency:

    python -m benches.big_request [--names 200000] [--seconds 10] [--json FILE]

A `tidelog serve` process; a healthy client sends small Metadata requests (one topic) back
to back and records each one's latency, first alone, then while another connection sends
Metadata requests naming ``--names`` topics (about 6.5 MB each at the default, the size that
froze every client for 2.2 s before large requests were decoded and encoded in worker
threads). Prints the healthy client's p50/p99/max both ways and the big requests' duration.
The broker's storage engine does not take part (metadata only).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from tests.wire import Wire, produce_one

from tidelog.protocol import _messages as m
from tidelog.pytest_plugin import serve_process

M = m.MetadataRequest


def metadata(names: list[str]) -> m.MetadataRequest:
    return M(
        topics=[M.MetadataRequestTopic(name=n) for n in names],
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )


def latencies(bootstrap: str, seconds: float) -> list[float]:
    w = Wire(bootstrap, timeout=60)
    small = metadata(["healthy"])
    out = []
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            t = time.perf_counter()
            w.request(small, 12)
            out.append(time.perf_counter() - t)
    finally:
        w.close()
    return out


def hog(bootstrap: str, names: int, stop: Any, times: Any) -> None:
    """Sends the big Metadata request back to back until ``stop``; puts each one's duration."""
    big = metadata([f"no-such-topic-{i:012d}" for i in range(names)])
    w = Wire(bootstrap, timeout=120)
    try:
        while not stop.is_set():
            t = time.perf_counter()
            w.request(big, 12)
            times.put(time.perf_counter() - t)
    finally:
        w.close()


def summary(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "requests": len(xs),
        "p50_ms": round(statistics.median(xs) * 1000, 2),
        "p99_ms": round(xs[int(len(xs) * 0.99)] * 1000, 2),
        "max_ms": round(xs[-1] * 1000, 2),
    }


def run(names: int, seconds: float) -> dict[str, object]:
    with TemporaryDirectory() as tmp:
        proc, port = serve_process(Path(tmp) / "data", "--log-level", "warning")
        bootstrap = f"127.0.0.1:{port}"
        try:
            w = Wire(bootstrap)
            produce_one(w, "healthy", b"x")  # creates the topic
            w.close()
            alone = latencies(bootstrap, seconds)
            big = metadata([f"no-such-topic-{i:012d}" for i in range(names)])
            size = len(big.encode(12).buf)
            # The big client in its own process: its decoding must not share the healthy
            # client's interpreter lock.
            ctx = multiprocessing.get_context("spawn")
            stop, times = ctx.Event(), ctx.Queue()
            hogger = ctx.Process(target=hog, args=(bootstrap, names, stop, times))
            hogger.start()
            try:
                times.get(timeout=300)  # the first one has been answered: the broker is busy now
                loaded = latencies(bootstrap, seconds)
            finally:
                stop.set()
                hogger.join(300)
            big_times = [times.get() for _ in range(times.qsize())]
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "big_request_bytes": size,
        "big_requests": len(big_times),
        "big_request_s": round(statistics.median(big_times), 2) if big_times else None,
        "healthy_alone": summary(alone),
        "healthy_during_big": summary(loaded),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--json")
    args = ap.parse_args()
    result = run(args.names, args.seconds)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
