"""What the metrics cost (issue 13), with librdkafka (confluent-kafka), on both engines:

    python -m benches.metrics [--smoke] [--json .benchmarks/metrics.json]

Per engine: one producer's and one consumer's throughput (100 B, 4 partitions, acks=1)
against a broker serving ``/metrics`` while it is scraped every second, and against one
without metrics, alternated over seven rounds (medians); and how long a scrape of a broker
hosting 1 000 partitions takes (median of ten).
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
import urllib.request

from benches.broker import both_engines, broker, consume, create, produce
from tidelog.cluster.local import free_port


def scrape_ms(port: int, timeout: float = 30) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        r.read()
    return (time.perf_counter() - start) * 1000


class Scraper:
    """Scrapes the ``/metrics`` of ``ports`` every ``interval`` seconds from a thread, as
    Prometheus would, until the ``with`` block ends; ``answered`` counts the scrapes that got
    a whole answer (a broker that is down or stopped refuses or times out the others)."""

    def __init__(self, ports: list[int], interval: float) -> None:
        self.ports, self.interval = ports, interval
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for port in self.ports:
                try:
                    scrape_ms(port, timeout=5)
                    self.answered += 1
                except (OSError, http.client.HTTPException):
                    pass

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(engine: str, smoke: bool) -> dict[str, float]:
    n = 2000 if smoke else (300_000 if engine == "rust" else 30_000)
    rounds = 1 if smoke else 7
    out: dict[str, float] = {}
    metrics_port = free_port()
    # Both brokers run at once and the runs alternate between them, so that the machine's
    # drift (this one varies by 15% from minute to minute) falls on both alike.
    with (
        broker(engine) as (plain_proc, plain_port, _),
        broker(engine, f"metrics.listen=127.0.0.1:{metrics_port}") as (proc, port, _),
    ):
        runs: dict[str, list[float]] = {}
        with Scraper([metrics_port], 1.0):
            for i in range(rounds):
                for name, p, pid in (
                    ("without metrics", plain_port, plain_proc.pid),
                    ("with metrics scraped", port, proc.pid),
                ):
                    topic = f"t{i}"
                    create(p, topic, 4)
                    runs.setdefault(f"produce 100 B {name} (msg/s)", []).append(
                        produce(p, topic, n, 100, "1", pid)[0]
                    )
                    runs.setdefault(f"consume 100 B {name} (msg/s)", []).append(consume(p, topic, 4, n))
        out.update({k: statistics.median(v) for k, v in sorted(runs.items())})
        for what in ("produce", "consume"):  # each round's ratio: the two ran minutes apart at most
            on, off = (
                runs[f"{what} 100 B with metrics scraped (msg/s)"],
                runs[f"{what} 100 B without metrics (msg/s)"],
            )
            out[f"{what}: metrics on / off, median of paired rounds"] = statistics.median(
                a / b for a, b in zip(on, off, strict=True)
            )
        partitions = 100 if smoke else 1000
        create(port, "wide", partitions)
        produce(port, "wide", partitions * 10, 100, "1", proc.pid)
        consume(port, "wide", partitions, partitions * 10)
        out[f"scrape of {partitions} partitions (ms)"] = statistics.median(
            scrape_ms(metrics_port) for _ in range(10)
        )
    return out


def main() -> int:
    both_engines(run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
