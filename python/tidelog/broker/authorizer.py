"""Who may do what, with Kafka's ACL model (``StandardAuthorizer``): an ACL binds a resource
pattern (a TOPIC, GROUP, CLUSTER or TRANSACTIONAL_ID name, LITERAL, PREFIXED or the LITERAL
wildcard ``*``) to a principal (or ``User:*``), a host (or ``*``), an operation and ALLOW or
DENY. A request is allowed when the principal is a super user (``super.users``), else when
no DENY and some ALLOW among the ACLs of the resource match it; an ALLOW of READ, WRITE,
DELETE or ALTER also allows DESCRIBE, of ALTER_CONFIGS also DESCRIBE_CONFIGS, of ALL every
operation (a DENY denies only its own operation, or ALL). A resource no ACL names at all is
allowed only with ``allow.everyone.if.no.acl.found``.

A broker without ``authorizer.class.name`` allows everything (``AllowAll``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from tidelog.protocol.constants import (
    CLUSTER_NAME,
    WILDCARD,
    AclOperation,
    AclPermissionType,
    AclResourceType,
    PatternType,
)

ANONYMOUS = "User:ANONYMOUS"
WILDCARD_PRINCIPAL = "User:*"

_IMPLIES_DESCRIBE = frozenset(
    {AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE, AclOperation.ALTER}
)
_IMPLIES_DESCRIBE_CONFIGS = frozenset({AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS})

_O = AclOperation
#: The operations an ``*_authorized_operations`` field reports on each resource type
#: (Kafka's ``AclEntry.supportedOperations``).
SUPPORTED_OPERATIONS: Mapping[AclResourceType, tuple[AclOperation, ...]] = {
    AclResourceType.TOPIC: (
        _O.READ, _O.WRITE, _O.CREATE, _O.DESCRIBE, _O.DELETE, _O.ALTER, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS
    ),
    AclResourceType.GROUP: (_O.READ, _O.DESCRIBE, _O.DELETE),
    AclResourceType.CLUSTER: (
        _O.CREATE, _O.CLUSTER_ACTION, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS, _O.IDEMPOTENT_WRITE, _O.ALTER,
        _O.DESCRIBE,
    ),
    AclResourceType.TRANSACTIONAL_ID: (_O.DESCRIBE, _O.WRITE),
}  # fmt: skip


class Authorizer(Protocol):
    def authorize(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType, name: str
    ) -> bool:
        """Whether ``principal``, connected from ``host``, may do ``operation`` on the resource."""
        ...

    def authorize_any(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType
    ) -> bool:
        """Whether the principal may do ``operation`` on some resource of the type (Kafka's
        ``authorizeByResourceType``: an idempotent producer needs WRITE on some topic)."""
        ...


class AllowAll:
    """The authorizer of a broker without ACLs."""

    def authorize(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType, name: str
    ) -> bool:
        return True

    def authorize_any(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType
    ) -> bool:
        return True


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class AclBinding:
    """One ACL."""

    resource_type: AclResourceType
    resource_name: str
    pattern_type: PatternType
    principal: str
    host: str
    operation: AclOperation
    permission: AclPermissionType

    def invalid(self) -> str | None:
        """Why this ACL may not be created (Kafka's ``AclControlManager`` rules), or None."""
        if self.resource_type in (AclResourceType.UNKNOWN, AclResourceType.ANY):
            return "Invalid resourceType"
        if self.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
            return "Invalid patternType"
        if self.operation in (AclOperation.UNKNOWN, AclOperation.ANY):
            return "Invalid operation"
        if self.permission not in (AclPermissionType.ALLOW, AclPermissionType.DENY):
            return "Invalid permissionType"
        if not self.resource_name:
            return "Resource name should not be empty"
        if self.resource_type == AclResourceType.CLUSTER and self.resource_name != CLUSTER_NAME:
            return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        kind, colon, name = self.principal.partition(":")
        if not colon or not kind or not name:
            return f"Could not parse principal from `{self.principal}` (no colon is found)"
        if not self.host:
            return "Invalid host"
        return None

    def doc(self) -> dict[str, Any]:
        """As stored in the metadata."""
        return {
            "resource_type": self.resource_type.name,
            "resource_name": self.resource_name,
            "pattern_type": self.pattern_type.name,
            "principal": self.principal,
            "host": self.host,
            "operation": self.operation.name,
            "permission": self.permission.name,
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> AclBinding:
        """``doc()``'s inverse; KeyError or ValueError if ``doc`` is not one."""
        return cls(
            AclResourceType[doc["resource_type"]],
            str(doc["resource_name"]),
            PatternType[doc["pattern_type"]],
            str(doc["principal"]),
            str(doc["host"]),
            AclOperation[doc["operation"]],
            AclPermissionType[doc["permission"]],
        )

    @property
    def key(self) -> str:
        """A name for this ACL that is the same wherever it is computed (its etcd key)."""
        return hashlib.sha256(json.dumps(self.doc(), sort_keys=True).encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True, slots=True)
class AclFilter:
    """Which ACLs DescribeAcls lists and DeleteAcls removes (Kafka's ``AclBindingFilter``):
    ANY types and None strings match everything; pattern MATCH matches the ACLs that would
    apply to the named resource (the literal name, the wildcard, and prefixes of it)."""

    resource_type: AclResourceType
    resource_name: str | None
    pattern_type: PatternType
    principal: str | None
    host: str | None
    operation: AclOperation
    permission: AclPermissionType

    def invalid(self) -> str | None:
        if self.resource_type == AclResourceType.UNKNOWN or self.pattern_type == PatternType.UNKNOWN:
            return "Invalid resource filter"
        if self.operation == AclOperation.UNKNOWN or self.permission == AclPermissionType.UNKNOWN:
            return "Invalid ACL filter"
        return None

    def matches(self, acl: AclBinding) -> bool:
        if self.resource_type not in (AclResourceType.ANY, acl.resource_type):
            return False
        if not self._name_matches(acl):
            return False
        return (
            self.principal in (None, acl.principal)
            and self.host in (None, acl.host)
            and self.operation in (AclOperation.ANY, acl.operation)
            and self.permission in (AclPermissionType.ANY, acl.permission)
        )

    def _name_matches(self, acl: AclBinding) -> bool:
        name = self.resource_name
        if self.pattern_type == PatternType.ANY:
            return name is None or name == acl.resource_name
        if self.pattern_type == PatternType.MATCH:
            if name is None:
                return True
            if acl.pattern_type == PatternType.LITERAL:
                return acl.resource_name in (name, WILDCARD)
            return name.startswith(acl.resource_name)
        return self.pattern_type == acl.pattern_type and name in (None, acl.resource_name)


#: Decisions remembered per authorizer (cleared when full, and whenever the ACLs change).
DECISION_CACHE = 10_000


class AclAuthorizer:
    """Kafka's ACL rules over the ACLs that ``acls()`` returns (the metadata image's), indexed
    again whenever that collection changes. Decisions are remembered until the ACLs change:
    a produce or fetch asks the same question for every partition of every request."""

    def __init__(
        self, acls: Callable[[], Sequence[AclBinding]], super_users: Iterable[str], allow_if_no_acl: bool
    ) -> None:
        self._acls = acls
        self.super_users = frozenset(super_users)
        self.allow_if_no_acl = allow_if_no_acl
        self._indexed: Sequence[AclBinding] | None = None
        self._literal: dict[tuple[AclResourceType, str], list[AclBinding]] = {}
        self._prefixed: dict[AclResourceType, list[AclBinding]] = {}
        self._decided: dict[tuple[str, str, AclOperation, AclResourceType, str], bool] = {}

    def _index(self) -> None:
        acls = self._acls()
        if acls is self._indexed:
            return
        literal: dict[tuple[AclResourceType, str], list[AclBinding]] = {}
        prefixed: dict[AclResourceType, list[AclBinding]] = {}
        for acl in acls:
            if acl.pattern_type == PatternType.LITERAL:
                literal.setdefault((acl.resource_type, acl.resource_name), []).append(acl)
            else:
                prefixed.setdefault(acl.resource_type, []).append(acl)
        self._literal, self._prefixed, self._indexed = literal, prefixed, acls
        self._decided = {}

    def authorize(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType, name: str
    ) -> bool:
        if principal in self.super_users:
            return True
        self._index()
        question = (principal, host, operation, resource_type, name)
        decided = self._decided.get(question)
        if decided is None:
            if len(self._decided) >= DECISION_CACHE:
                self._decided = {}
            decided = self._decided[question] = self._decide(principal, host, operation, resource_type, name)
        return decided

    def _decide(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType, name: str
    ) -> bool:
        applicable = [
            *self._literal.get((resource_type, name), ()),
            *self._literal.get((resource_type, WILDCARD), ()),
            *(a for a in self._prefixed.get(resource_type, ()) if name.startswith(a.resource_name)),
        ]
        if not applicable:
            return self.allow_if_no_acl
        allowed = False
        for acl in applicable:
            result = _result(acl, principal, host, operation)
            if result == AclPermissionType.DENY:
                return False
            allowed = allowed or result == AclPermissionType.ALLOW
        return allowed

    def authorize_any(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType
    ) -> bool:
        """Some ALLOW of ``operation`` on the type applies to the principal, and no DENY of it
        on every resource of the type (the wildcard) does."""
        if principal in self.super_users:
            return True
        acls = [a for a in self._acls() if a.resource_type == resource_type]
        results = [(a, _result(a, principal, host, operation)) for a in acls]
        if any(
            r == AclPermissionType.DENY
            and a.pattern_type == PatternType.LITERAL
            and a.resource_name == WILDCARD
            for a, r in results
        ):
            return False
        return any(r == AclPermissionType.ALLOW for _, r in results) or (not acls and self.allow_if_no_acl)


def _result(acl: AclBinding, principal: str, host: str, operation: AclOperation) -> AclPermissionType | None:
    """What ``acl`` says of the request, or None if it does not apply to it."""
    if acl.principal not in (principal, WILDCARD_PRINCIPAL) or acl.host not in (WILDCARD, host):
        return None
    if acl.operation in (AclOperation.ALL, operation):
        return acl.permission
    if acl.permission == AclPermissionType.ALLOW and (
        (operation == AclOperation.DESCRIBE and acl.operation in _IMPLIES_DESCRIBE)
        or (operation == AclOperation.DESCRIBE_CONFIGS and acl.operation in _IMPLIES_DESCRIBE_CONFIGS)
    ):
        return acl.permission
    return None
