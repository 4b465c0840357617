"""DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the users' SCRAM
credentials as the metadata keeps them, as Kafka's controller answers. Describing needs
DESCRIBE on the cluster and lists, per user, the mechanisms and iteration counts (never key
material); no users named means every user. Altering needs ALTER on the cluster; a user named
twice in one request is DUPLICATE_RESOURCE, an unknown mechanism UNSUPPORTED_SASL_MECHANISM, an
empty name or an iteration count outside 4096-16384 UNACCEPTABLE_CREDENTIAL, removing a
credential that does not exist RESOURCE_NOT_FOUND. The client sends a salted password; the
broker keeps only the keys derived from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.broker.apis._registry import handles
from tidelog.broker.apis._resolve import authorized_on_cluster
from tidelog.broker.controller import TopicError
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation
from tidelog.scram import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    CredentialChanges,
    ScramCredential,
    ScramMechanism,
)

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext


@handles(m.DescribeUserScramCredentialsRequest, 0, 0)
async def describe_user_scram_credentials(
    ctx: RequestContext, req: m.DescribeUserScramCredentialsRequest
) -> m.DescribeUserScramCredentialsResponse:
    R = m.DescribeUserScramCredentialsResponse
    Result = R.DescribeUserScramCredentialsResult
    if not authorized_on_cluster(ctx, AclOperation.DESCRIBE):
        return R(throttle_time_ms=0, error_code=ec.CLUSTER_AUTHORIZATION_FAILED, error_message=None)
    known = ctx.broker.image.scram_credentials
    names = [u.name for u in req.users] if req.users else sorted(known)
    results = []
    for name in dict.fromkeys(names):
        if names.count(name) > 1:
            results.append(
                Result(
                    user=name,
                    error_code=ec.DUPLICATE_RESOURCE,
                    error_message="Cannot describe SCRAM credentials for the same user twice in a single "
                    f"request: {name}",
                )
            )
        elif name not in known:
            results.append(
                Result(
                    user=name,
                    error_code=ec.RESOURCE_NOT_FOUND,
                    error_message=f"Attempt to describe a user credential that does not exist: {name}",
                )
            )
        else:
            infos = [
                Result.CredentialInfo(mechanism=mech, iterations=cred.iterations)
                for mech, cred in sorted(known[name].items())
            ]
            results.append(Result(user=name, error_code=ec.NONE, error_message=None, credential_infos=infos))
    return R(throttle_time_ms=0, error_code=ec.NONE, error_message=None, results=results)


@handles(m.AlterUserScramCredentialsRequest, 0, 0)
async def alter_user_scram_credentials(
    ctx: RequestContext, req: m.AlterUserScramCredentialsRequest
) -> m.AlterUserScramCredentialsResponse:
    R = m.AlterUserScramCredentialsResponse
    Result = R.AlterUserScramCredentialsResult
    named = [d.name for d in req.deletions] + [u.name for u in req.upsertions]
    if not authorized_on_cluster(ctx, AclOperation.ALTER):
        return R(
            throttle_time_ms=0,
            results=[
                Result(user=n, error_code=ec.CLUSTER_AUTHORIZATION_FAILED, error_message=None)
                for n in dict.fromkeys(named)
            ],
        )
    known = ctx.broker.image.scram_credentials
    errors: dict[str, tuple[int, str]] = {}
    changes: dict[str, dict[ScramMechanism, ScramCredential | None]] = {}
    for d in req.deletions:
        mechanism = ScramMechanism.of(d.mechanism)
        if (error := _check_user(d.name, mechanism, named)) is not None:
            errors[d.name] = error
        elif mechanism not in known.get(d.name, {}):
            errors[d.name] = (
                ec.RESOURCE_NOT_FOUND,
                "Attempt to delete a user credential that does not exist",
            )
        else:
            changes[d.name] = {mechanism: None}
    for u in req.upsertions:
        mechanism = ScramMechanism.of(u.mechanism)
        if (error := _check_user(u.name, mechanism, named)) is not None:
            errors[u.name] = error
        elif u.iterations < MIN_ITERATIONS:
            errors[u.name] = (ec.UNACCEPTABLE_CREDENTIAL, "Too few iterations")
        elif u.iterations > MAX_ITERATIONS:
            errors[u.name] = (ec.UNACCEPTABLE_CREDENTIAL, "Too many iterations")
        elif not u.salt or not u.salted_password:
            errors[u.name] = (
                ec.UNACCEPTABLE_CREDENTIAL,
                "The salt and the salted password must not be empty",
            )
        else:
            cred = ScramCredential.from_salted_password(
                mechanism, bytes(u.salt), bytes(u.salted_password), u.iterations
            )
            changes[u.name] = {mechanism: cred}
    done: dict[str, CredentialChanges] = {n: c for n, c in changes.items() if n not in errors}
    if done:
        try:
            await ctx.broker.controller.alter_scram_credentials(done)
        except TopicError as e:
            errors.update((n, (e.code, str(e))) for n in done)
    results = [
        Result(user=n, error_code=errors[n][0], error_message=errors[n][1])
        if n in errors
        else Result(user=n, error_code=ec.NONE, error_message=None)
        for n in dict.fromkeys(named)
    ]
    return R(throttle_time_ms=0, results=results)


def _check_user(name: str, mechanism: ScramMechanism, named: list[str]) -> tuple[int, str] | None:
    """Why a change to ``name``'s credential is refused before it is looked at: the user
    named twice in the request (``named``), an empty name, an unknown mechanism."""
    if named.count(name) > 1:
        return ec.DUPLICATE_RESOURCE, "A user credential cannot be altered twice in the same request"
    if not name:
        return ec.UNACCEPTABLE_CREDENTIAL, "Username must not be empty"
    if mechanism is ScramMechanism.UNKNOWN:
        return ec.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism"
    return None
