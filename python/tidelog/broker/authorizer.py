"""Who may do what: the seam where Kafka's ACL model plugs in (the security issue). Until then
every principal is ``User:ANONYMOUS`` and everything is allowed."""

from __future__ import annotations

from typing import Protocol

from tidelog.protocol.constants import AclOperation, AclResourceType

ANONYMOUS = "User:ANONYMOUS"


class Authorizer(Protocol):
    def authorize(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType, name: str
    ) -> bool:
        """Whether ``principal``, connected from ``host``, may do ``operation`` on the resource."""
        ...


class AllowAll:
    """The authorizer of a broker without ACLs."""

    def authorize(
        self, principal: str, host: str, operation: AclOperation, resource_type: AclResourceType, name: str
    ) -> bool:
        return True
