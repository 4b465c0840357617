"""Numbered server processes on this machine (tidelog brokers, Kafka nodes) that a benchmark
starts, kills and restarts by node id."""

from __future__ import annotations

import signal
import subprocess
from typing import Any, Self


class ProcessNodes:
    """Nodes 1..n, each one process; ``start`` (per kind) sets ``procs[node]`` and
    ``ports[node]``. Leaving the ``with`` block stops them all at once: stopped one by one,
    a KRaft node that is the last of its quorum waits forever for its controlled shutdown."""

    def __init__(self, n: int) -> None:
        self.procs: dict[int, subprocess.Popen[Any]] = {}
        self.ports = dict.fromkeys(range(1, n + 1), 0)

    def start(self, node: int) -> None:
        raise NotImplementedError

    def kill(self, node: int) -> None:
        self.procs[node].send_signal(signal.SIGKILL)
        self.procs[node].wait(30)

    def stop(self, node: int) -> None:
        self.procs[node].terminate()
        self.procs[node].wait(120)

    def pid(self, node: int) -> int:
        return self.procs[node].pid

    def __enter__(self) -> Self:
        for node in self.ports:
            self.start(node)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
