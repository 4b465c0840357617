"""``tidelog acls``: list, add and remove ACLs (CreateAcls, DescribeAcls, DeleteAcls), with
``kafka-acls``' options and its listing format, so either tool reads what the other wrote:

    tidelog acls add --allow-principal User:alice --operation Write --topic orders
    tidelog acls add --allow-principal User:bob --operation Read --topic team1- \\
        --resource-pattern-type prefixed
    tidelog acls list --topic orders
    tidelog acls remove --allow-principal User:alice --operation Write --topic orders
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from tidelog.cli._common import add_bootstrap, check, connect, run
from tidelog.client.connection import BrokerError
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import (
    CLUSTER_NAME,
    WILDCARD,
    AclOperation,
    AclPermissionType,
    AclResourceType,
    PatternType,
)

#: An ACL's fields as CreateAcls and DeleteAcls name them.
CREATION_FIELDS = m.CreateAclsRequest.AclCreation.__slots__
FILTER_FIELDS = m.DeleteAclsRequest.DeleteAclsFilter.__slots__


def _resources(args: argparse.Namespace) -> list[tuple[AclResourceType, str]]:
    out = [(AclResourceType.TOPIC, t) for t in args.topic or []]
    out += [(AclResourceType.GROUP, g) for g in args.group or []]
    if args.cluster:
        out.append((AclResourceType.CLUSTER, CLUSTER_NAME))
    return out


def _entries(args: argparse.Namespace) -> list[tuple[str, str, AclPermissionType]]:
    """(principal, host, permission) of each principal named."""
    allow = [(p, args.allow_host, AclPermissionType.ALLOW) for p in args.allow_principal or []]
    return allow + [(p, args.deny_host, AclPermissionType.DENY) for p in args.deny_principal or []]


def _operation(name: str) -> AclOperation:
    """An operation as ``kafka-acls`` takes it: any case, with or without separators
    (``AlterConfigs``, ``alter-configs``, ``ALTER_CONFIGS``)."""
    wanted = name.upper().replace("-", "").replace("_", "")
    for op in AclOperation:
        if op.name.replace("_", "") == wanted:
            return op
    raise BrokerError(f"unknown operation {name!r}")


def _listing(resources: list[Any]) -> str:
    """DescribeAcls' resources as ``kafka-acls --list`` prints them."""
    out = []
    for r in resources:
        pattern = (
            f"ResourcePattern(resourceType={AclResourceType(r.resource_type).name}, "
            f"name={r.resource_name}, patternType={PatternType(r.pattern_type).name})"
        )
        out.append(f"Current ACLs for resource `{pattern}`: ")
        out += [
            f" \t(principal={a.principal}, host={a.host}, operation={AclOperation(a.operation).name}, "
            f"permissionType={AclPermissionType(a.permission_type).name})"
            for a in r.acls
        ]
        out.append("")
    return "\n".join(out) + ("\n" if out else "")


def acls(args: argparse.Namespace, out: TextIO) -> int:
    pattern = PatternType[args.resource_pattern_type.upper()]
    with connect(args) as conn:
        if args.action == "list":
            D = m.DescribeAclsRequest
            named: list[tuple[AclResourceType, str | None]] = [*_resources(args)]
            if not named:  # everything
                named, pattern = [(AclResourceType.ANY, None)], PatternType.ANY
            for rtype, name in named:
                r = conn.send(
                    D(
                        resource_type_filter=rtype,
                        resource_name_filter=name,
                        pattern_type_filter=pattern,
                        principal_filter=args.principal,
                        host_filter=None,
                        operation=AclOperation.ANY,
                        permission_type=AclPermissionType.ANY,
                    )
                )
                check(r.error_code, "listing ACLs", r.error_message)
                out.write(_listing(r.resources))
            return 0
        resources, entries = _resources(args), _entries(args)
        operations = [_operation(o) for o in args.operation or ["All"]]
        if not resources or not entries:
            raise BrokerError(
                f"acls {args.action} needs a resource (--topic, --group, --cluster) and a principal"
            )
        # Every (resource, principal, operation) named: the ACLs to add, or the ones to remove.
        acls = [
            (rtype, name, pattern, principal, host, op, permission)
            for rtype, name in resources
            for principal, host, permission in entries
            for op in operations
        ]
        if args.action == "add":
            C = m.CreateAclsRequest
            creations = [C.AclCreation(**dict(zip(CREATION_FIELDS, acl, strict=True))) for acl in acls]
            for result in conn.send(C(creations=creations)).results:
                check(result.error_code, "adding an ACL", result.error_message)
            out.write(f"added {len(creations)} ACL(s)\n")
            return 0
        F = m.DeleteAclsRequest.DeleteAclsFilter
        filters = [F(**dict(zip(FILTER_FIELDS, acl, strict=True))) for acl in acls]
        removed = 0
        for result in conn.send(m.DeleteAclsRequest(filters=filters)).filter_results:
            check(result.error_code, "removing ACLs", result.error_message)
            removed += len(result.matching_acls)
        out.write(f"removed {removed} ACL(s)\n")
    return 0


def add_parser(sub: Any) -> None:
    a = sub.add_parser("acls", help="list, add and remove ACLs (as kafka-acls)")
    a.add_argument("action", choices=["list", "add", "remove"])
    a.add_argument("--topic", action="append", help="a topic (or, prefixed, a prefix); repeatable")
    a.add_argument("--group", action="append", help="a consumer group; repeatable")
    a.add_argument("--cluster", action="store_true", help="the cluster itself")
    a.add_argument(
        "--resource-pattern-type", default="literal", choices=["literal", "prefixed", "match", "any"]
    )
    a.add_argument("--allow-principal", action="append", help="User:NAME (User:* for everyone); repeatable")
    a.add_argument("--deny-principal", action="append", help="User:NAME; repeatable")
    a.add_argument("--allow-host", default=WILDCARD)
    a.add_argument("--deny-host", default=WILDCARD)
    a.add_argument(
        "--operation",
        action="append",
        help="Read, Write, Create, Delete, Alter, Describe, "
        "ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite, All; repeatable",
    )
    a.add_argument("--principal", help="list: only the ACLs of this principal")
    add_bootstrap(a)
    a.set_defaults(func=lambda args: run(lambda: acls(args, sys.stdout)))
