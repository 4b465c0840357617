"""DescribeClientQuotas and AlterClientQuotas (v0-1), as Kafka's controller answers them.
Entities are a user, a client id, or both, each name possibly null (``<default>``); the
keys are ``producer_byte_rate``, ``consumer_byte_rate`` (bytes per second, whole numbers) and
``request_percentage``, all above 0. Describing needs DESCRIBE_CONFIGS on the cluster,
altering ALTER_CONFIGS (else CLUSTER_AUTHORIZATION_FAILED); an invalid entity or key is
INVALID_REQUEST, for that entry alone. Describe filters: EXACT (a name), DEFAULT, SPECIFIED
(any name but the default) per entity type; ``strict``: entities of those types only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tidelog.broker.apis._registry import handles
from tidelog.broker.apis._resolve import authorized_on_cluster
from tidelog.broker.controller import TopicError
from tidelog.broker.quotas import CLIENT_ID, QUOTA_KEYS, REQUEST_PERCENTAGE, USER, Entity
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.protocol.constants import AclOperation

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext

MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED = 0, 1, 2


def _entity(parts: list[m.AlterClientQuotasRequest.EntryData.EntityData]) -> Entity | str:
    """The entity, or why it is not one."""
    if not parts:
        return "Invalid empty client quota entity"
    seen: dict[str, str | None] = {}
    for p in parts:
        if p.entity_type in seen:
            return f"Invalid client quota entity, duplicate entity entry {p.entity_type}"
        if p.entity_type not in (USER, CLIENT_ID):
            return f"Unhandled client quota entity type: {p.entity_type}"
        if p.entity_name == "":
            return f"Empty {p.entity_type} not supported"
        seen[p.entity_type] = p.entity_name
    return tuple(sorted(seen.items()))


def _changes(ops: list[m.AlterClientQuotasRequest.EntryData.OpData]) -> dict[str, float | None] | str:
    """The quota changes, or why they are refused."""
    out: dict[str, float | None] = {}
    for op in ops:
        if op.key in out:
            return f"Duplicate quota key {op.key} not updating quota for this entity"
        if op.key not in QUOTA_KEYS:
            return f"Invalid configuration key {op.key}"
        if not op.remove:
            if op.value <= 0:
                return f"Quota {op.key} must be greater than 0"
            if op.key != REQUEST_PERCENTAGE and op.value != int(op.value):
                return f"{op.key} cannot be a fractional value."
        out[op.key] = None if op.remove else op.value
    return out


@handles(m.AlterClientQuotasRequest, 0, 1)
async def alter_client_quotas(
    ctx: RequestContext, req: m.AlterClientQuotasRequest
) -> m.AlterClientQuotasResponse:
    R = m.AlterClientQuotasResponse
    allowed = authorized_on_cluster(ctx, AclOperation.ALTER_CONFIGS)
    results: list[tuple[m.AlterClientQuotasRequest.EntryData, int, str | None]] = []
    valid: dict[Entity, dict[str, float | None]] = {}
    for entry in req.entries:
        entity, changes = _entity(entry.entity), _changes(entry.ops)
        if not allowed:
            results.append((entry, ec.CLUSTER_AUTHORIZATION_FAILED, None))
        elif isinstance(entity, str) or isinstance(changes, str):
            results.append((entry, ec.INVALID_REQUEST, entity if isinstance(entity, str) else str(changes)))
        elif entity in valid:
            results.append((entry, ec.INVALID_REQUEST, f"Ignoring duplicate entity {entity}"))
        else:
            valid[entity] = changes
            results.append((entry, ec.NONE, None))
    if valid and not req.validate_only:
        try:
            await ctx.broker.controller.alter_client_quotas(valid)
        except TopicError as e:
            results = [(entry, code or e.code, msg or str(e)) for entry, code, msg in results]
    E = R.EntryData.EntityData
    return R(
        throttle_time_ms=0,
        entries=[
            R.EntryData(
                error_code=code,
                error_message=message,
                entity=[E(entity_type=p.entity_type, entity_name=p.entity_name) for p in entry.entity],
            )
            for entry, code, message in results
        ],
    )


@handles(m.DescribeClientQuotasRequest, 0, 1)
async def describe_client_quotas(
    ctx: RequestContext, req: m.DescribeClientQuotasRequest
) -> m.DescribeClientQuotasResponse:
    R = m.DescribeClientQuotasResponse
    if not authorized_on_cluster(ctx, AclOperation.DESCRIBE_CONFIGS):
        return R(
            throttle_time_ms=0, error_code=ec.CLUSTER_AUTHORIZATION_FAILED, error_message=None, entries=None
        )
    wanted: dict[str, tuple[int, str | None]] = {}
    for c in req.components:
        if c.entity_type in wanted:
            message = f"Entity type {c.entity_type} cannot appear more than once in the filter."
            return R(throttle_time_ms=0, error_code=ec.INVALID_REQUEST, error_message=message, entries=None)
        if c.match_type not in (MATCH_EXACT, MATCH_DEFAULT, MATCH_SPECIFIED):
            message = f"Unknown match type {c.match_type}"
            return R(throttle_time_ms=0, error_code=ec.INVALID_REQUEST, error_message=message, entries=None)
        wanted[c.entity_type] = (c.match_type, c.match)

    def matches(entity: Entity) -> bool:
        names = dict(entity)
        if req.strict and set(names) != set(wanted):
            return False
        for kind, (match_type, match) in wanted.items():
            if kind not in names:
                return False
            name = names[kind]
            if match_type == MATCH_EXACT and name != match:
                return False
            if match_type == MATCH_DEFAULT and name is not None:
                return False
            if match_type == MATCH_SPECIFIED and name is None:
                return False
        return True

    D = R.EntryData
    entries = [
        D(
            entity=[D.EntityData(entity_type=t, entity_name=n) for t, n in entity],
            values=[D.ValueData(key=k, value=v) for k, v in sorted(values.items())],
        )
        for entity, values in sorted(ctx.broker.image.client_quotas.items(), key=lambda kv: str(kv[0]))
        if matches(entity)
    ]
    return R(throttle_time_ms=0, error_code=ec.NONE, error_message=None, entries=entries)
