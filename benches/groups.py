"""Consumer-group benchmarks against a `tidelog serve` process (Rust engine), with
confluent-kafka members:

    python -m benches.groups [--smoke]

Time from the first join to a stable group of 1, 2, 4 and 8 members (initial rebalance delay
0); rebalance time after a clean leave and after a crash (session timeout 6 s); offset commits
per second from one client.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer

from benches.broker import broker, create
from tidelog.client.connection import Connection
from tidelog.protocol import _messages as m

MEMBER_PROCESS = Path(__file__).resolve().parent.parent / "tests" / "group_member_process.py"


class Member(threading.Thread):
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 200,
                "partition.assignment.strategy": "range",
            }
        )
        self.c.subscribe([topic])
        self.assigned: frozenset[int] = frozenset()
        self.stop = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stop.is_set():
            self.c.poll(0.02)
            self.assigned = frozenset(tp.partition for tp in self.c.assignment())
        self.c.close()


def wait(cond, timeout: float = 60) -> float:
    start = time.perf_counter()
    while not cond():
        if time.perf_counter() - start > timeout:
            raise TimeoutError
        time.sleep(0.005)
    return time.perf_counter() - start


def stable(members: list[Member], partitions: int) -> bool:
    owned = sorted(p for mb in members for p in mb.assigned)
    return owned == list(range(partitions)) and all(mb.assigned for mb in members[:partitions])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    rows: list[tuple[str, float, str]] = []
    with broker("rust", "group.initial.rebalance.delay.ms=0") as (_proc, port, _):
        bs = f"127.0.0.1:{port}"
        create(port, "g8", 8)
        for n in (1, 2, 4, 8):
            start = time.perf_counter()
            members = [Member(bs, f"stable-{n}", "g8") for _ in range(n)]
            wait(lambda members=members: stable(members, 8))
            rows.append((f"first join to a stable group of {n}", time.perf_counter() - start, "s"))
            if n == 4:
                members[0].stop.set()
                members[0].join()
                took = wait(lambda members=members: stable(members[1:], 8))
                rows.append(("rebalance after a clean leave (4 -> 3)", took, "s"))
            for mb in members:
                mb.stop.set()
            for mb in members:
                mb.join()
        procs = [
            subprocess.Popen(
                [sys.executable, str(MEMBER_PROCESS), bs, "crash", "g8"], stdout=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        assigned: dict[int, list[int]] = {0: [], 1: []}

        def read(i: int) -> None:
            for line in procs[i].stdout:  # type: ignore[union-attr]
                if line.startswith("A"):
                    assigned[i] = [int(x) for x in line.split()[1:]]

        for i in (0, 1):
            threading.Thread(target=read, args=(i,), daemon=True).start()
        wait(lambda: len(assigned[0]) == 4 and len(assigned[1]) == 4)
        procs[0].send_signal(signal.SIGKILL)
        took = wait(lambda: len(assigned[1]) == 8)
        rows.append(("rebalance after a crash (session timeout 6 s)", took, "s"))
        for p in procs:
            p.kill()
            p.wait()
        with Connection(bs) as conn:
            OC = m.OffsetCommitRequest
            n = 200 if args.smoke else 5000
            start = time.perf_counter()
            for i in range(n):
                conn.send(
                    OC(
                        group_id="commits",
                        generation_id_or_member_epoch=-1,
                        member_id="",
                        topics=[
                            OC.OffsetCommitRequestTopic(
                                name="g8",
                                partitions=[
                                    OC.OffsetCommitRequestTopic.OffsetCommitRequestPartition(
                                        partition_index=i % 8, committed_offset=i, committed_metadata=None
                                    )
                                ],
                            )
                        ],
                    )
                )
            rows.append(
                ("offset commits, one client, one at a time", n / (time.perf_counter() - start), "/s")
            )
    print("| measurement | value |")
    print("|---|---:|")
    for name, value, unit in rows:
        print(f"| {name} | {value:,.2f} {unit} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
