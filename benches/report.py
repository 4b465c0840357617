"""Prints the Markdown table of one or more pytest-benchmark JSON files: per operation, each
implementation's median rate, Rust / pure-Python and Rust / limit. With several runs, each
cell is the median over the runs and the last column gives the range of Rust / limit.

    python -m benches.report .benchmarks/storage.json [more runs ...]

With ``--plot DIR`` it also draws them (matplotlib, in the ``bench`` extra): ``storage.png``,
each operation's Rust, pure-Python and limit rates relative to the limit, from the
pytest-benchmark files; and, for each JSON of the broker benchmarks given after
``--engines`` (``benches.broker``, ``benches.security``, ``benches.metrics``), a chart of its
rows on both engines:

    python -m benches.report --plot docs/img .benchmarks/storage.json --engines .benchmarks/broker.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


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


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_storage(runs: list[dict[str, Any]], path: Path) -> None:
    """Each operation's median rate per implementation, relative to the limit (log scale)."""
    plt = _pyplot()
    rates: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    units: dict[str, str] = {}
    for data in runs:
        for b in data["benchmarks"]:
            info = b["extra_info"]
            value, units[b["group"] or b["name"]] = rate(info["units"], info["unit"], b["stats"]["median"])
            rates[b["group"] or b["name"]][b["params"]["impl"]].append(value)
    groups = [g for g in rates if "limit" in rates[g]]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.27
    for i, (impl, colour) in enumerate((("rust", "#b7410e"), ("python", "#3572a5"), ("limit", "#888888"))):
        ratios = [
            speedup(statistics.median(rates[g][impl]), statistics.median(rates[g]["limit"]), units[g])
            if impl in rates[g]
            else 0.0
            for g in groups
        ]
        ax.bar([x + (i - 1) * width for x in range(len(groups))], ratios, width, label=impl, color=colour)
    ax.set_yscale("log")
    ax.set_ylabel("rate / the machine's limit (log)")
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    ax.set_title("Storage core: Rust and pure Python against the machine's limit")
    ax.set_ylim(top=10)  # room above the limit's bars for the legend
    ax.legend(ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_engines(data: dict[str, Any], title: str, path: Path) -> None:
    """The rows of a both-engines benchmark, Rust beside pure Python: throughput (msg/s) in
    one chart, and latency (ms) in another beside it when there are such rows."""
    plt = _pyplot()
    results = data["results"]
    units = [u for u in (" (msg/s)", " (ms)") if any(k.endswith(u) for k in results["rust"])]
    rows = {u: [k for k in results["rust"] if k.endswith(u)] for u in units}
    height = 0.45 * max(len(r) for r in rows.values()) + 1.5
    fig, axes = plt.subplots(1, len(units), figsize=(7 * len(units) + 3, height + 1), squeeze=False)
    for ax, unit in zip(axes[0], units, strict=True):
        keys = rows[unit]
        ys = range(len(keys))
        for offset, engine, label, colour in (
            (0.2, "rust", "rust", "#b7410e"),
            (-0.2, "python", "pure Python", "#3572a5"),
        ):
            ax.barh(
                [y + offset for y in ys], [results[engine][k] for k in keys], 0.4, label=label, color=colour
            )
        ax.set_yticks(list(ys), [k.removesuffix(unit) for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("messages / s" if unit == " (msg/s)" else "ms")
        ax.xaxis.set_major_formatter(lambda x, _pos: f"{x / 1000:,.0f}k" if x >= 1000 else f"{x:g}")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    args = argv[1:]
    plot_dir = engines = None
    if "--plot" in args:
        i = args.index("--plot")
        plot_dir = Path(args[i + 1])
        del args[i : i + 2]
    if "--engines" in args:
        i = args.index("--engines")
        engines, args = args[i + 1 :], args[:i]
    if not args and not engines:
        print(__doc__, file=sys.stderr)
        return 2
    if plot_dir is not None:
        plot_dir.mkdir(parents=True, exist_ok=True)
        for path in engines or []:
            with open(path) as f:
                plot_engines(
                    json.load(f),
                    f"{Path(path).stem}: Rust and pure Python",
                    plot_dir / f"{Path(path).stem}.png",
                )
    if not args:
        return 0
    runs = []
    for path in args:
        with open(path) as f:
            runs.append(json.load(f))
    if plot_dir is not None:
        plot_storage(runs, plot_dir / "storage.png")
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
