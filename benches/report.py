"""Prints the Markdown table of one or more pytest-benchmark JSON files: per operation, each
implementation's median rate, Rust / pure-Python and Rust / limit. With several runs, each
cell is the median over the runs and the last column gives the range of Rust / limit.

    python -m benches.report .benchmarks/storage.json [more runs ...]
"""

from __future__ import annotations

import json
import statistics
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


def speedup(x: float, y: float, unit: str) -> float:
    """How many times faster x is than y (rates, or the inverse for per-call times)."""
    x, y = max(x, 1e-12), max(y, 1e-12)
    return y / x if unit == "µs/call" else x / y


def table(runs: list[dict]) -> str:
    # group -> impl -> rates over the runs
    rates: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    units: dict[str, str] = {}
    order: list[str] = []
    for data in runs:
        for b in data["benchmarks"]:
            group = b["group"] or b["name"]
            if group not in order:
                order.append(group)
            info = b["extra_info"]
            value, units[group] = rate(info["units"], info["unit"], b["stats"]["median"])
            rates[group][b["params"]["impl"]].append(value)
    lines = [
        "| operation | unit | rust | pure Python | limit | rust / python | rust / limit"
        " | rust / limit, range |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group in order:
        g, unit = rates[group], units[group]
        med = {impl: statistics.median(v) for impl, v in g.items()}
        cells = [fmt(med[i]) if i in med else "-" for i in ("rust", "python", "limit")]
        vs_python = f"{speedup(med['rust'], med['python'], unit):.2f}x" if "python" in med else "-"
        if "limit" in med:
            vs_limit = f"{speedup(med['rust'], med['limit'], unit):.2f}x"
            each = [speedup(r, lim, unit) for r, lim in zip(g["rust"], g["limit"], strict=False)]
            spread = f"{min(each):.2f}-{max(each):.2f}x"
        else:
            vs_limit = spread = "-"
        lines.append(f"| {group} | {unit} | {' | '.join(cells)} | {vs_python} | {vs_limit} | {spread} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    runs = []
    for path in argv[1:]:
        with open(path) as f:
            runs.append(json.load(f))
    machine = runs[0].get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "?")
    print(
        f"Machine: {cpu}, {machine.get('python_implementation', '')} {machine.get('python_version', '')}, "
        f"{len(runs)} run(s)"
    )
    print()
    print(table(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
