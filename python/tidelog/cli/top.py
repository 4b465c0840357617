"""``tidelog top``: a live terminal view of a broker or cluster, refreshed in place: each
topic's rates in and out, the partitions whose ISR is short or that have no leader, and the
groups with the most lag. Rates and lag come from the brokers' ``/metrics`` (``--metrics``,
one URL per broker; ``tidelog serve --metrics-port``), partition states from Metadata.

    tidelog top --bootstrap-server 127.0.0.1:9092 --metrics http://127.0.0.1:9644/metrics
"""

from __future__ import annotations

import argparse
import time
import urllib.request
from collections import defaultdict
from typing import Any

from tidelog.cli._common import add_bootstrap, connect, run
from tidelog.protocol import _messages as m

#: Counters summed over brokers: (topic, metric) -> value.
Totals = dict[tuple[str, str], float]
TOPIC_COUNTERS = (
    "kafka_server_brokertopicmetrics_messagesin_total",
    "kafka_server_brokertopicmetrics_bytesin_total",
    "kafka_server_brokertopicmetrics_bytesout_total",
)


def scrape(urls: list[str]) -> tuple[Totals, dict[tuple[str, str], float]]:
    """Per-topic counters summed over the brokers, and lag per (group, topic)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: Totals = defaultdict(float)
    lag: dict[tuple[str, str], float] = defaultdict(float)
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name in TOPIC_COUNTERS and "topic" in s.labels:
                    totals[(s.labels["topic"], s.name)] += s.value
                elif s.name == "kafka_consumergroup_lag":
                    lag[(s.labels["group"], s.labels["topic"])] += s.value
    return totals, lag


def frame(
    meta: Any, now: Totals, before: Totals | None, seconds: float, lag: dict[tuple[str, str], float]
) -> Any:
    """One screen: the three tables, as a ``rich`` renderable."""
    from rich.console import Group
    from rich.table import Table

    def rate(topic: str, name: str) -> str:
        if before is None or seconds <= 0:
            return "-"
        return f"{(now.get((topic, name), 0) - before.get((topic, name), 0)) / seconds:,.0f}"

    topics = Table(title="Topics", expand=True)
    for heading in ("topic", "partitions", "messages in/s", "bytes in/s", "bytes out/s"):
        topics.add_column(heading, justify="left" if heading == "topic" else "right")
    short = Table(title="Partitions with a short ISR or no leader", expand=True)
    for heading in ("partition", "leader", "replicas", "ISR"):
        short.add_column(heading)
    for t in sorted(meta.topics, key=lambda t: t.name):
        if t.is_internal:
            continue
        topics.add_row(t.name, str(len(t.partitions)), *(rate(t.name, n) for n in TOPIC_COUNTERS))
        for p in sorted(t.partitions, key=lambda p: p.partition_index):
            if p.leader_id < 0 or len(p.isr_nodes) < len(p.replica_nodes):
                leader = str(p.leader_id) if p.leader_id >= 0 else "none"
                short.add_row(f"{t.name}-{p.partition_index}", leader, str(p.replica_nodes), str(p.isr_nodes))
    groups = Table(title="Groups with the most lag", expand=True)
    for heading in ("group", "topic", "lag"):
        groups.add_column(heading, justify="right" if heading == "lag" else "left")
    for (group, topic), total in sorted(lag.items(), key=lambda kv: -kv[1])[:10]:
        groups.add_row(group, topic, f"{total:,.0f}")
    return Group(topics, short, groups)


def top(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    urls = [u.strip() for u in (args.metrics or "").split(",") if u.strip()]
    console = Console()
    before: Totals | None = None
    then = time.monotonic()
    shown = 0
    with connect(args) as conn, Live(console=console, auto_refresh=False, transient=False) as live:
        while args.iterations is None or shown < args.iterations:
            meta = conn.send(m.MetadataRequest(topics=None, allow_auto_topic_creation=False))
            totals, lag = scrape(urls) if urls else ({}, {})
            now = time.monotonic()
            live.update(frame(meta, totals, before, now - then, lag), refresh=True)
            before, then, shown = totals, now, shown + 1
            if args.iterations is None or shown < args.iterations:
                time.sleep(args.interval)
    return 0


def add_parser(sub: Any) -> None:
    t = sub.add_parser("top", help="a live view of topics' rates, short ISRs and group lag")
    t.add_argument("--metrics", help="the brokers' /metrics URLs, comma-separated (for rates and lag)")
    t.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    t.add_argument("--iterations", type=int, default=None, help="refresh this many times, then exit")
    add_bootstrap(t)
    t.set_defaults(func=lambda a: run(lambda: top(a)))
