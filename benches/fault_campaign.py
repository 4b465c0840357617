"""Fault campaign: SIGKILL the broker again and again under idempotent acks=all producers,
with segments rolling, and check that every acknowledged record is there exactly once.

    python -m benches.fault_campaign [--kills 40] [--producers 3] [--engine rust|python|both]

Several confluent-kafka (librdkafka) producers write unique values to one topic
(`enable.idempotence`, `acks=all`, retries across the broker's restarts). The broker, a
`tidelog serve` process with small segments (`log.segment.bytes`), is killed with SIGKILL
at random moments and restarted on the same port and data directory. It serves `/metrics`,
scraped ten times a second all along, so the per-request metrics and the event loop's
idleness instrument run through every kill. At the end it is
stopped cleanly and started once more, and a consumer reads the whole topic: an
acknowledged value missing is a loss, a value read twice a duplicate. The figures are in
benches/README.md; the test suite runs a short campaign of each engine
(tests/test_fault_campaign.py).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from benches.metrics import Scraper
from tidelog.pytest_plugin import serve_process

TOPIC = "campaign"
SETTINGS = ["log.segment.bytes=32768", "num.partitions=3"]


@dataclass
class Outcome:
    engine: str
    kills: int
    producers: int
    acknowledged: int
    stored: int
    lost: int
    duplicated: int
    delivery_errors: int
    segments: int
    scrapes: int
    seconds: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data: Path, port: int, engine: str, metrics_port: int) -> subprocess.Popen[str]:
    settings = [*SETTINGS, f"metrics.listen=127.0.0.1:{metrics_port}"]
    sets = [x for s in settings for x in ("--set", s)]
    proc, _ = serve_process(
        data, "--engine", engine, "--listen", f"127.0.0.1:{port}", "--log-level", "warning", *sets
    )
    return proc


def produce(index: int, bootstrap: str, stop: threading.Event, acked: list[bytes], errors: list[str]) -> None:
    """One idempotent acks=all producer writing b"p<index>-<n>" until ``stop``, then flushing."""
    from confluent_kafka import Producer

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 120_000,
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            "log_level": 0,
        }
    )

    def delivered(err: object, msg: object) -> None:
        if err is None:
            acked.append(msg.value())  # type: ignore[attr-defined]
        else:
            errors.append(str(err))

    n = 0
    while not stop.is_set():
        try:
            p.produce(TOPIC, value=b"p%d-%d" % (index, n), on_delivery=delivered)
            n += 1
        except BufferError:
            p.poll(0.05)
        p.poll(0)
        if n % 200 == 0:
            time.sleep(0.005)  # a steady stream, not only a queue full of retries
    p.flush(120)


def read_all(bootstrap: str, expected: int) -> list[bytes]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "campaign", "enable.auto.commit": False})
    meta = c.list_topics(TOPIC, timeout=30).topics[TOPIC]
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in meta.partitions])
    out: list[bytes] = []
    idle_until = time.monotonic() + 10
    try:
        while time.monotonic() < idle_until:
            msgs = c.consume(5000, 0.5)
            out += [v for msg in msgs if msg.error() is None and (v := msg.value()) is not None]
            if msgs:
                idle_until = time.monotonic() + (2 if len(out) >= expected else 10)
    finally:
        c.close()
    return out


def run(engine: str, kills: int, producers: int, seed: int = 0) -> Outcome:
    rng = random.Random(seed)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tidelog-campaign-") as tmp:
        data = Path(tmp) / "data"
        port, metrics_port = free_port(), free_port()
        bootstrap = f"127.0.0.1:{port}"
        proc = start(data, port, engine, metrics_port)
        scraper = Scraper([metrics_port], 0.1)
        stop = threading.Event()
        acked: list[bytes] = []
        errors: list[str] = []
        threads = [
            threading.Thread(target=produce, args=(i, bootstrap, stop, acked, errors))
            for i in range(producers)
        ]
        for t in threads:
            t.start()
        try:
            with scraper:
                for _ in range(kills):
                    time.sleep(rng.uniform(0.2, 1.0))
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    proc = start(data, port, engine, metrics_port)
                time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(180)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        proc = start(data, port, engine, metrics_port)
        try:
            stored = read_all(bootstrap, len(acked))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        segments = len(list(data.glob(f"{TOPIC}-*/*.log")))
    counts = Counter(stored)
    return Outcome(
        engine=engine,
        kills=kills,
        producers=producers,
        acknowledged=len(acked),
        stored=len(stored),
        lost=sum(1 for v in set(acked) if v not in counts),
        duplicated=sum(n - 1 for n in counts.values() if n > 1),
        delivery_errors=len(errors),
        segments=segments,
        scrapes=scraper.answered,
        seconds=round(time.monotonic() - began, 1),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=40)
    ap.add_argument("--producers", type=int, default=3)
    ap.add_argument("--engine", choices=["rust", "python", "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the outcomes here")
    args = ap.parse_args()
    engines = ["rust", "python"] if args.engine == "both" else [args.engine]
    outcomes = [run(e, args.kills, args.producers, args.seed) for e in engines]
    columns = (
        "engine kills producers acknowledged stored lost duplicated delivery-errors segments scrapes seconds"
    )
    print("| " + " | ".join(columns.split()) + " |")
    print("|---" + "|---:" * 10 + "|")
    for o in outcomes:
        print(
            f"| {o.engine} | {o.kills} | {o.producers} | {o.acknowledged:,} | {o.stored:,} | {o.lost} | "
            f"{o.duplicated} | {o.delivery_errors} | {o.segments} | {o.scrapes} | {o.seconds} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes], indent=1))


if __name__ == "__main__":
    main()
