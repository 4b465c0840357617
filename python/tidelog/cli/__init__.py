"""The ``tidelog`` command: one module per subcommand, each adding its parser."""

from __future__ import annotations

import argparse

import tidelog
from tidelog.cli import acls, cluster, consume, demo, groups, produce, serve, top, topics, users


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidelog", description="A Kafka-compatible streaming log.")
    parser.add_argument("--version", action="version", version=f"tidelog {tidelog.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (demo, serve, topics, produce, consume, groups, cluster, users, acls, top):
        command.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))
