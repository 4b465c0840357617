"""The ``tidelog`` command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

import tidelog


def _demo(args: argparse.Namespace) -> int:
    """Appends to an embedded log, reads it back, records a reader position, reopens."""
    directory = args.data_dir or tempfile.mkdtemp(prefix="tidelog-demo-")
    path = os.path.join(directory, "demo-0")
    out = sys.stdout
    with tidelog.Log.open(path, engine=args.engine, segment_bytes=args.segment_bytes) as log:
        out.write(
            f"opened {path} with the {log.engine} engine (offsets {log.start_offset}..{log.end_offset})\n"
        )
        t0 = time.perf_counter()
        first = log.end_offset
        for i in range(args.batches):
            log.append([(f"key-{i}-{j}".encode(), f"value {i}.{j}".encode()) for j in range(args.batch_size)])
        log.flush()
        elapsed = time.perf_counter() - t0
        n = args.batches * args.batch_size
        out.write(
            f"appended {n} records in {args.batches} batches and fsynced in {elapsed * 1000:.1f} ms "
            f"({n / elapsed:,.0f} records/s); log end offset {log.end_offset}, "
            f"{len(log.segments)} segment(s), {log.size_bytes} bytes\n"
        )
        position = log.committed("demo-reader") or first
        records = log.read(position, max_records=3)
        for r in records:
            out.write(f"  read offset {r.offset}: key={r.key!r} value={r.value!r}\n")
        if records:
            log.commit("demo-reader", records[-1].offset + 1)
            out.write(f"committed reader position demo-reader={records[-1].offset + 1}\n")
    with tidelog.Log.open(path, engine=args.engine) as log:
        report = log.recovery_report
        out.write(
            f"reopened: clean shutdown={report.clean_shutdown}, end offset {log.end_offset}, "
            f"demo-reader at {log.committed('demo-reader')}\n"
        )
    return 0


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _serve(args: argparse.Namespace) -> int:
    """Runs the broker until SIGINT/SIGTERM."""
    from tidelog.broker import BrokerConfig
    from tidelog.broker.server import run

    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), handlers=[handler])
    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.engine:
        overrides["engine"] = args.engine
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        overrides.update(host=host or "127.0.0.1", port=int(port))
    settings = dict(kv.split("=", 1) for kv in args.set)
    if args.config:
        config = BrokerConfig.from_properties(args.config, **overrides)
        config = BrokerConfig.from_settings({**config.settings, **settings}, **overrides)
    else:
        config = BrokerConfig.from_settings(settings, **overrides)

    def ready(broker: object) -> None:
        port = getattr(broker, "port", 0)
        sys.stdout.write(f"tidelog broker listening on {config.host}:{port}\n")
        sys.stdout.flush()

    run(config, on_ready=ready)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidelog", description="A Kafka-compatible streaming log.")
    parser.add_argument("--version", action="version", version=f"tidelog {tidelog.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="append to an embedded log, read it back, and say what happened")
    demo.add_argument("--data-dir", help="directory for the log (default: a new temporary directory)")
    demo.add_argument("--engine", choices=["auto", "rust", "python"], default=None)
    demo.add_argument("--batches", type=int, default=100)
    demo.add_argument("--batch-size", type=int, default=1000)
    demo.add_argument("--segment-bytes", type=int, default=1 << 30)
    demo.set_defaults(func=_demo)
    serve = sub.add_parser("serve", help="run the Kafka-compatible broker")
    serve.add_argument("--listen", default="127.0.0.1:9092", help="host:port (port 0: any free port)")
    serve.add_argument("--data-dir", default="./tidelog-data")
    serve.add_argument("--engine", choices=["auto", "rust", "python"], default=None)
    serve.add_argument("--config", help="a Kafka-style server.properties file")
    serve.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Kafka-named broker setting, e.g. log.flush.interval.messages=1",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    serve.set_defaults(func=_serve)
    from tidelog.cli_tools import add_commands

    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
