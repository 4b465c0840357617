"""Shared fixtures. Every storage test takes ``engine`` and so runs on both engines."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tidelog
from tidelog.cluster.local import EtcdProcess

ENGINES = ["rust", "python"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The storage engine under test; the Rust engine must be built (no silent skip)."""
    name: str = request.param
    if name == "rust" and not tidelog.rust_available():
        pytest.fail("the Rust engine is not built: run `pip install -e .` first")
    return name


@pytest.fixture
def open_log(engine: str, tmp_path: Path) -> Callable[..., tidelog.Log]:
    """Opens logs on the engine under test; closes whatever is still open at the end."""
    opened: list[tidelog.Log] = []

    def _open(path: str | os.PathLike[str] | None = None, **settings: Any) -> tidelog.Log:
        log = tidelog.Log.open(path or tmp_path / "t-0", engine=engine, **settings)
        opened.append(log)
        return log

    yield _open  # type: ignore[misc]
    for log in opened:
        log.close()


def other(engine: str) -> str:
    return "python" if engine == "rust" else "rust"


def poll_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Waits, up to ``timeout`` seconds, for on-disk state that nothing can notify a test about
    (e.g. directories the broker's background purge removes), re-checking every 20 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def stop_gracefully(proc: subprocess.Popen[str]) -> int:
    """SIGTERM to a ``tidelog serve`` process; its exit status (the caller checks it)."""
    proc.send_signal(signal.SIGTERM)
    return proc.wait(30)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> contents)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails a test during which tidelog logged an ERROR (an internal failure, e.g. a request
    handler raising), even if what the test checked still held."""
    caplog.set_level("ERROR", logger="tidelog")
    yield
    errors = [
        r.getMessage()
        for r in caplog.get_records("call")
        if r.levelname == "ERROR" and r.name.startswith("tidelog")
    ]
    assert not errors, f"tidelog logged errors: {errors}"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    """A real etcd on loopback ports, its data in the test's directory (tests that take it
    are marked ``needs_etcd`` from tests/cluster.py)."""
    with EtcdProcess(tmp_path / "etcd") as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start etcd are marked ``cluster``: the wheel check leaves them out (they test
    replication, which the README's test command covers, not the wheel's packaging)."""
    for item in items:
        if "etcd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)
