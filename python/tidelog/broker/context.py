"""What a handler knows about the request it answers: the connection's session (who the
client is and where it came in) and the request's own facts (api version, header)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tidelog.broker.authorizer import ANONYMOUS

if TYPE_CHECKING:
    from tidelog.broker.clock import Clock
    from tidelog.broker.server import Broker


@dataclasses.dataclass
class Session:
    """One client connection's state, kept for its whole life. ``principal`` is who the
    authorizer is asked about: ``User:ANONYMOUS`` until authentication (issue 12) sets it."""

    listener: str
    security_protocol: str
    peer_host: str
    peer_port: int
    principal: str = ANONYMOUS
    #: From ApiVersions v3+ (KIP-511), as the client reports itself.
    client_software_name: str | None = None
    client_software_version: str | None = None

    @property
    def peer(self) -> str:
        return f"{self.peer_host}:{self.peer_port}"


@dataclasses.dataclass(frozen=True, slots=True)
class RequestContext:
    """One request: its connection's session, its header's facts, and the broker's services."""

    broker: Broker
    session: Session
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None

    @property
    def clock(self) -> Clock:
        return self.broker.clock
