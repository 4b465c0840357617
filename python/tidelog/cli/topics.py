"""``tidelog topics create|list|describe|alter|delete`` (as ``kafka-topics``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import uuid
from typing import Any, TextIO

from tidelog.cli._common import add_bootstrap, check, connect, offsets, run
from tidelog.client.connection import Connection
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AlterConfigOp, ConfigResourceType, ConfigSource, OffsetSpec


def _configs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--config takes KEY=VALUE, not {pair!r}")
        out[key] = value
    return out


def _need_topic(args: argparse.Namespace) -> argparse.Namespace:
    if args.action not in ("list", "describe") and not args.topic:
        raise SystemExit(f"topics {args.action} needs a topic name")
    if args.action == "create" and args.partitions is None:
        args.partitions = -1
    return args


def _offset_ranges(conn: Connection, meta: Any, t: Any) -> dict[int, str]:
    """ "start..end" of each partition with a leader, asked of that leader (in a cluster, the
    partitions of a topic are led by different brokers)."""
    by_leader: dict[int, list[int]] = {}
    for p in t.partitions:
        if p.leader_id >= 0:
            by_leader.setdefault(p.leader_id, []).append(p.partition_index)
    addresses = {b.node_id: f"{b.host}:{b.port}" for b in meta.brokers}
    out = {}
    for leader, parts in sorted(by_leader.items()):
        if leader not in addresses:
            continue
        with contextlib.ExitStack() as stack:
            there = conn
            if len(addresses) > 1:
                there = stack.enter_context(Connection(addresses[leader], security=conn.security))
            start = offsets(there, t.name, parts, OffsetSpec.EARLIEST)
            end = offsets(there, t.name, parts, OffsetSpec.LATEST)
        out.update({p: f"{start[p]}..{end[p]}" for p in parts})
    return out


def topics(args: argparse.Namespace, out: TextIO) -> int:
    with connect(args) as conn:
        if args.action == "create":
            C = m.CreateTopicsRequest
            resp = conn.send(
                C(
                    timeout_ms=30000,
                    topics=[
                        C.CreatableTopic(
                            name=args.topic,
                            num_partitions=args.partitions,
                            replication_factor=args.replication_factor,
                            configs=[
                                C.CreatableTopic.CreatableTopicConfig(name=k, value=v)
                                for k, v in _configs(args.config).items()
                            ],
                        )
                    ],
                )
            )
            r = resp.topics[0]
            check(r.error_code, f"create {args.topic}", r.error_message)
            out.write(f"Created topic {args.topic}.\n")
        elif args.action == "list":
            meta = conn.send(m.MetadataRequest(topics=None))
            for t in sorted(meta.topics, key=lambda t: t.name):
                if not (args.exclude_internal and t.is_internal):
                    out.write(f"{t.name}\n")
        elif args.action == "describe":
            req_topics = (
                None if args.topic is None else [m.MetadataRequest.MetadataRequestTopic(name=args.topic)]
            )
            meta = conn.send(m.MetadataRequest(topics=req_topics, allow_auto_topic_creation=False))
            for t in sorted(meta.topics, key=lambda t: t.name):
                check(t.error_code, f"topic {t.name}")
                parts = sorted(p.partition_index for p in t.partitions)
                configs = conn.send(
                    m.DescribeConfigsRequest(
                        resources=[
                            m.DescribeConfigsRequest.DescribeConfigsResource(
                                resource_type=ConfigResourceType.TOPIC,
                                resource_name=t.name,
                                configuration_keys=None,
                            )
                        ]
                    )
                )
                explicit = [
                    f"{c.name}={c.value}"
                    for c in configs.results[0].configs
                    if c.config_source == ConfigSource.DYNAMIC_TOPIC_CONFIG
                ]
                factor = len(t.partitions[0].replica_nodes) if t.partitions else 0
                out.write(
                    f"Topic: {t.name}\tTopicId: {t.topic_id}\tPartitionCount: {len(parts)}\t"
                    f"ReplicationFactor: {factor}\tConfigs: {','.join(explicit)}\n"
                )
                ranges = _offset_ranges(conn, meta, t)
                for p in sorted(t.partitions, key=lambda p: p.partition_index):
                    out.write(
                        f"\tTopic: {t.name}\tPartition: {p.partition_index}\tLeader: {p.leader_id}\t"
                        f"Replicas: {','.join(map(str, p.replica_nodes))}\t"
                        f"Isr: {','.join(map(str, p.isr_nodes))}"
                        f"\tOffsets: {ranges.get(p.partition_index, 'unavailable')}\n"
                    )
        elif args.action == "alter":
            if args.partitions:
                CP = m.CreatePartitionsRequest
                resp = conn.send(
                    CP(
                        timeout_ms=30000,
                        validate_only=False,
                        topics=[
                            CP.CreatePartitionsTopic(name=args.topic, count=args.partitions, assignments=None)
                        ],
                    )
                )
                check(resp.results[0].error_code, f"alter {args.topic}", resp.results[0].error_message)
            changes: list[tuple[str, str | None, int]] = [
                (k, v, AlterConfigOp.SET) for k, v in _configs(args.config).items()
            ]
            changes += [(k, None, AlterConfigOp.DELETE) for k in args.delete_config]
            if changes:
                IA = m.IncrementalAlterConfigsRequest
                R = IA.AlterConfigsResource
                resp = conn.send(
                    IA(
                        validate_only=False,
                        resources=[
                            R(
                                resource_type=ConfigResourceType.TOPIC,
                                resource_name=args.topic,
                                configs=[
                                    R.AlterableConfig(name=k, config_operation=op, value=v)
                                    for k, v, op in changes
                                ],
                            )
                        ],
                    )
                )
                r = resp.responses[0]
                check(r.error_code, f"alter {args.topic}", r.error_message)
            out.write(f"Altered topic {args.topic}.\n")
        elif args.action == "delete":
            D = m.DeleteTopicsRequest
            by_name = D.DeleteTopicState(name=args.topic, topic_id=uuid.UUID(int=0))  # v6+
            resp = conn.send(D(topic_names=[args.topic], topics=[by_name], timeout_ms=30000))
            r = resp.responses[0]
            check(r.error_code, f"delete {args.topic}", r.error_message)
            out.write(f"Deleted topic {args.topic}.\n")
    return 0


def add_parser(sub: Any) -> None:
    t = sub.add_parser("topics", help="create, list, describe, alter or delete topics")
    t.add_argument("action", choices=["create", "list", "describe", "alter", "delete"])
    t.add_argument("topic", nargs="?")
    t.add_argument("--partitions", type=int, default=None)
    t.add_argument("--replication-factor", type=int, default=-1)
    t.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--delete-config", action="append", default=[], metavar="KEY")
    t.add_argument("--exclude-internal", action="store_true", help="list: leave out internal topics")
    add_bootstrap(t)
    t.set_defaults(func=lambda a: run(lambda: topics(_need_topic(a), sys.stdout)))
