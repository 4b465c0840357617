"""What the wire-protocol commands share: the broker address, error reporting, partitions and offsets."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tidelog.client.connection import BrokerError, Connection
from tidelog.protocol import _messages as m
from tidelog.protocol.security import ClientSecurity


def add_bootstrap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bootstrap-server", default="127.0.0.1:9092")
    p.add_argument(
        "--command-config",
        metavar="FILE",
        help="Kafka client properties for a secured listener (security.protocol, sasl.mechanism, "
        "sasl.username, sasl.password or sasl.jaas.config, ssl.ca.location)",
    )


def connect(args: argparse.Namespace, bootstrap: str | None = None) -> Connection:
    """A connection to ``bootstrap`` (default ``--bootstrap-server``) as ``--command-config`` says."""
    security = ClientSecurity.from_file(args.command_config) if args.command_config else None
    return Connection(bootstrap or args.bootstrap_server, security=security)


def check(code: int, what: str, message: str | None = None) -> None:
    if code:
        raise BrokerError(f"{what}: error {code}" + (f" ({message})" if message else ""), code)


def partitions(conn: Connection, topic: str) -> list[int]:
    meta = conn.send(
        m.MetadataRequest(
            topics=[m.MetadataRequest.MetadataRequestTopic(name=topic)], allow_auto_topic_creation=False
        )
    )
    t = meta.topics[0]
    check(t.error_code, f"topic {topic}")
    return sorted(p.partition_index for p in t.partitions)


def offsets(conn: Connection, topic: str, partitions: list[int], timestamp: int) -> dict[int, int]:
    L = m.ListOffsetsRequest
    resp = conn.send(
        L(
            replica_id=-1,
            topics=[
                L.ListOffsetsTopic(
                    name=topic,
                    partitions=[
                        L.ListOffsetsTopic.ListOffsetsPartition(partition_index=p, timestamp=timestamp)
                        for p in partitions
                    ],
                )
            ],
        )
    )
    out = {}
    for p in resp.topics[0].partitions:
        check(p.error_code, f"offsets of {topic}-{p.partition_index}")
        out[p.partition_index] = p.offset
    return out


def run(f: Any) -> int:
    try:
        return int(f())
    except BrokerError as e:
        sys.stderr.write(f"tidelog: {e}\n")
        return 1
    except OSError as e:
        sys.stderr.write(f"tidelog: cannot reach the broker: {e}\n")
        return 1
