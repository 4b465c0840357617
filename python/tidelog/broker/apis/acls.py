"""CreateAcls, DescribeAcls and DeleteAcls (v0-3), as Kafka answers them: creating and
deleting need ALTER on the cluster, describing DESCRIBE on it (else
CLUSTER_AUTHORIZATION_FAILED); an ACL that cannot exist (an ANY or UNKNOWN type, an empty
name, a CLUSTER name other than ``kafka-cluster``, a principal without ``Type:``) is
INVALID_REQUEST; DescribeAcls groups the matching ACLs by resource pattern; DeleteAcls
answers each filter with the ACLs it removed. The ACLs live in the metadata image and change
through the controller (a file in a single broker's ``meta/``, etcd keys in a cluster)."""

from __future__ import annotations

import enum
from itertools import groupby
from typing import TYPE_CHECKING, TypeVar

from tidelog.broker.apis._registry import handles
from tidelog.broker.apis._resolve import authorized_on_cluster
from tidelog.broker.authorizer import AclBinding, AclFilter
from tidelog.broker.controller import TopicError
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation, AclPermissionType, AclResourceType, PatternType

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext

E = TypeVar("E", bound=enum.IntEnum)


def _named(kind: type[E], value: int) -> E:
    """``value`` as ``kind``; its UNKNOWN (0) for a number Kafka does not define."""
    try:
        return kind(value)
    except ValueError:
        return kind(0)


def _filter(f: m.DescribeAclsRequest | m.DeleteAclsRequest.DeleteAclsFilter) -> AclFilter:
    return AclFilter(
        _named(AclResourceType, f.resource_type_filter),
        f.resource_name_filter,
        _named(PatternType, f.pattern_type_filter),
        f.principal_filter,
        f.host_filter,
        _named(AclOperation, f.operation),
        _named(AclPermissionType, f.permission_type),
    )


@handles(m.CreateAclsRequest, 0, 3)
async def create_acls(ctx: RequestContext, req: m.CreateAclsRequest) -> m.CreateAclsResponse:
    R = m.CreateAclsResponse
    Result = R.AclCreationResult
    if not authorized_on_cluster(ctx, AclOperation.ALTER):
        results = [
            Result(error_code=ec.CLUSTER_AUTHORIZATION_FAILED, error_message=None) for _ in req.creations
        ]
        return R(throttle_time_ms=0, results=results)
    bindings = [
        AclBinding(
            _named(AclResourceType, c.resource_type),
            c.resource_name,
            _named(PatternType, c.resource_pattern_type),
            c.principal,
            c.host,
            _named(AclOperation, c.operation),
            _named(AclPermissionType, c.permission_type),
        )
        for c in req.creations
    ]
    problems = [b.invalid() for b in bindings]
    valid = [b for b, problem in zip(bindings, problems, strict=True) if problem is None]
    failure: tuple[int, str] | None = None
    if valid:
        try:
            await ctx.broker.controller.alter_acls(valid, ())
        except TopicError as e:
            failure = (e.code, str(e))
    results = []
    for problem in problems:
        if problem is not None:
            results.append(Result(error_code=ec.INVALID_REQUEST, error_message=problem))
        elif failure is not None:
            results.append(Result(error_code=failure[0], error_message=failure[1]))
        else:
            results.append(Result(error_code=ec.NONE, error_message=None))
    return R(throttle_time_ms=0, results=results)


@handles(m.DescribeAclsRequest, 0, 3)
async def describe_acls(ctx: RequestContext, req: m.DescribeAclsRequest) -> m.DescribeAclsResponse:
    R = m.DescribeAclsResponse
    Resource = R.DescribeAclsResource
    if not authorized_on_cluster(ctx, AclOperation.DESCRIBE):
        return R(throttle_time_ms=0, error_code=ec.CLUSTER_AUTHORIZATION_FAILED, error_message=None)
    f = _filter(req)
    if (problem := f.invalid()) is not None:
        return R(throttle_time_ms=0, error_code=ec.INVALID_REQUEST, error_message=problem)
    matching = [a for a in ctx.broker.image.acls if f.matches(a)]  # sorted by resource first
    resources = []
    for (rtype, name, pattern), acls in groupby(
        matching, key=lambda a: (a.resource_type, a.resource_name, a.pattern_type)
    ):
        descriptions = [
            Resource.AclDescription(
                principal=a.principal, host=a.host, operation=a.operation, permission_type=a.permission
            )
            for a in acls
        ]
        resources.append(
            Resource(resource_type=rtype, resource_name=name, pattern_type=pattern, acls=descriptions)
        )
    return R(throttle_time_ms=0, error_code=ec.NONE, error_message=None, resources=resources)


@handles(m.DeleteAclsRequest, 0, 3)
async def delete_acls(ctx: RequestContext, req: m.DeleteAclsRequest) -> m.DeleteAclsResponse:
    R = m.DeleteAclsResponse
    Result = R.DeleteAclsFilterResult
    if not authorized_on_cluster(ctx, AclOperation.ALTER):
        results = [
            Result(error_code=ec.CLUSTER_AUTHORIZATION_FAILED, error_message=None) for _ in req.filters
        ]
        return R(throttle_time_ms=0, filter_results=results)
    acls = ctx.broker.image.acls
    matched: list[list[AclBinding] | str] = []
    for raw in req.filters:
        f = _filter(raw)
        problem = f.invalid()
        matched.append(problem if problem is not None else [a for a in acls if f.matches(a)])
    removed = {a for found in matched if not isinstance(found, str) for a in found}
    failure: tuple[int, str] | None = None
    if removed:
        try:
            await ctx.broker.controller.alter_acls((), removed)
        except TopicError as e:
            failure = (e.code, str(e))
    results = []
    for found in matched:
        if isinstance(found, str):
            results.append(Result(error_code=ec.INVALID_REQUEST, error_message=found))
        elif failure is not None and found:
            results.append(Result(error_code=failure[0], error_message=failure[1]))
        else:
            removed_acls = [
                Result.DeleteAclsMatchingAcl(
                    error_code=ec.NONE,
                    error_message=None,
                    resource_type=a.resource_type,
                    resource_name=a.resource_name,
                    pattern_type=a.pattern_type,
                    principal=a.principal,
                    host=a.host,
                    operation=a.operation,
                    permission_type=a.permission,
                )
                for a in found
            ]
            results.append(Result(error_code=ec.NONE, error_message=None, matching_acls=removed_acls))
    return R(throttle_time_ms=0, filter_results=results)
