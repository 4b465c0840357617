"""``tidelog serve``: the broker, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any


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

    if args.help_config:
        sys.stdout.write(BrokerConfig().help_table())
        return 0

    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per etcd call otherwise
    overrides: dict[str, object] = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.engine:
        overrides["engine"] = args.engine
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        overrides.update(host=host or "127.0.0.1", port=int(port))
    if args.etcd:
        overrides["etcd_endpoints"] = [u.strip() for u in args.etcd.split(",") if u.strip()]
    if args.cluster_id:
        overrides["cluster_name"] = args.cluster_id
    if args.node_id is not None:
        overrides["node_id"] = args.node_id
    settings = dict(kv.split("=", 1) for kv in args.set)
    if args.metrics_port is not None:
        settings["metrics.listen"] = f"{args.listen.rpartition(':')[0] or '127.0.0.1'}:{args.metrics_port}"
    if args.config:
        config = BrokerConfig.from_properties(args.config, **overrides)
        config = BrokerConfig.from_settings({**config.settings, **settings}, **overrides)
    else:
        config = BrokerConfig.from_settings(settings, **overrides)

    def ready(broker: object) -> None:
        port = getattr(broker, "port", 0)
        sys.stdout.write(f"tidelog broker listening on {config.host}:{port}\n")
        sys.stdout.flush()

    from tidelog.cluster.registration import NodeIdInUse

    refused: list[BaseException] = []
    try:
        run(config, on_ready=ready)
    except* NodeIdInUse as group:
        refused += group.exceptions
    if refused:
        sys.stderr.write(f"tidelog serve: {refused[0]}\n")
        return 2
    return 0


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the Kafka-compatible broker")
    serve.add_argument("--listen", default="127.0.0.1:9092", help="host:port (port 0: any free port)")
    serve.add_argument("--data-dir", default="./tidelog-data")
    serve.add_argument("--engine", choices=["auto", "rust", "python"], default=None)
    serve.add_argument("--node-id", type=int, default=None, help="this broker's node.id")
    serve.add_argument("--etcd", help="etcd URL[,URL...]: join that cluster (default: run alone)")
    serve.add_argument("--cluster-id", help="the cluster's name in etcd (default: tidelog)")
    serve.add_argument("--config", help="a Kafka-style server.properties file")
    serve.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Kafka-named broker setting, e.g. log.flush.interval.messages=1",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics, HOST that of --listen (metrics.listen)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--log-format", choices=["text", "json"], default="text")
    serve.add_argument(
        "--help-config",
        action="store_true",
        help="list every setting with its default and meaning, then exit",
    )
    serve.set_defaults(func=_serve)
