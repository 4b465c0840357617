"""Prints the Markdown table of a pytest-benchmark JSON file: per operation, each
implementation's median rate, Rust / pure-Python and Rust / limit.

    python -m benches.report .benchmarks/storage.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def rate(units: float, unit: str, seconds: float) -> tuple[float, str]:
    seconds = max(seconds, 1e-9)
    if unit == "bytes":
        return units / seconds / 1e6, "MB/s"
    if unit == "calls":
        return seconds / units * 1e6, "µs/call"
    return units / seconds, f"{unit}/s"


def fmt(value: float) -> str:
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def speedup(g: dict[str, tuple[float, str]], a: str, b: str, unit: str) -> str:
    """How many times faster `a` is than `b` (rates, or inverse for per-call times)."""
    if a not in g or b not in g:
        return "-"
    x, y = max(g[a][0], 1e-12), max(g[b][0], 1e-12)
    return f"{(y / x if unit == 'µs/call' else x / y):.2f}x"


def table(data: dict) -> str:
    groups: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)
    order: list[str] = []
    for b in data["benchmarks"]:
        group = b["group"] or b["name"]
        if group not in order:
            order.append(group)
        info = b["extra_info"]
        groups[group][b["params"]["impl"]] = rate(info["units"], info["unit"], b["stats"]["median"])
    lines = [
        "| operation | unit | rust | pure Python | limit | rust / python | rust / limit |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for group in order:
        g = groups[group]
        unit = next(iter(g.values()))[1]
        cells = [fmt(g[i][0]) if i in g else "-" for i in ("rust", "python", "limit")]
        speedups = [speedup(g, "rust", other, unit) for other in ("python", "limit")]
        lines.append(f"| {group} | {unit} | {' | '.join(cells)} | {' | '.join(speedups)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        data = json.load(f)
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "?")
    print(f"Machine: {cpu}, {machine.get('python_implementation', '')} {machine.get('python_version', '')}")
    print()
    print(table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
