"""Kafka's own Java tools and client, from the jars `.ci/run` fetches from Maven Central
(`tools/kafka-jars`, `mvn dependency:copy-dependencies`); tests that need them skip with
the reason where Java or the jars are missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JARS = Path(__file__).resolve().parent.parent / "tools" / "kafka-jars" / "target" / "dependency"


def classpath() -> str:
    """The jars' classpath, or a skip saying how to get them."""
    if shutil.which("java") is None:
        pytest.skip("java is not installed")
    if not any(JARS.glob("kafka-tools-*.jar")):
        pom = JARS.parent.parent / "pom.xml"
        pytest.skip(f"Kafka's jars are missing: run `mvn -q -f {pom} dependency:copy-dependencies`")
    return f"{JARS}/*"


def run_java(*args: str, timeout: float = 120, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``java -cp <Kafka's jars> args...`` (``stdin``: its input); the caller checks the
    outcome."""
    return subprocess.run(
        ["java", "-cp", classpath(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
