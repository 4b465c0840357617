"""What a handler knows about the request it answers: the connection's session (who the
client is and where it came in) and the request's own facts (api version, header)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tidelog.broker.authorizer import ANONYMOUS
from tidelog.broker.quotas import quota_user

if TYPE_CHECKING:
    from tidelog.broker.clock import Clock
    from tidelog.broker.sasl import MechanismServer
    from tidelog.broker.server import Broker


@dataclasses.dataclass
class Session:
    """One client connection's state, kept for its whole life. ``principal`` is who the
    authorizer is asked about: ``User:ANONYMOUS`` unless SASL or a TLS client certificate
    said who the client is."""

    listener: str
    security_protocol: str
    peer_host: str
    peer_port: int
    principal: str = ANONYMOUS
    #: From ApiVersions v3+ (KIP-511), as the client reports itself.
    client_software_name: str | None = None
    client_software_version: str | None = None
    #: False on a SASL listener until SaslAuthenticate has succeeded: until then only
    #: ApiVersions, SaslHandshake and SaslAuthenticate are answered.
    authenticated: bool = True
    #: The mechanism SaslHandshake chose, and its exchange while one is under way.
    sasl_mechanism: str | None = None
    sasl: MechanismServer | None = None
    #: After a SaslHandshake v0 the client sends its tokens as bare frames, not SaslAuthenticate.
    sasl_raw_tokens: bool = False
    #: With ``connections.max.reauth.ms``: when (monotonic seconds) the SASL session ends
    #: unless the client re-authenticates.
    sasl_expires_at: float | None = None
    #: Set by a handler whose answer is the connection's last: why it closes after sending
    #: it, and after how many seconds (a failed authentication waits, as Kafka's
    #: ``connection.failed.authentication.delay.ms``, so a client cannot retry in a tight loop).
    close_reason: str | None = None
    close_delay: float = 0.0

    @property
    def peer(self) -> str:
        return f"{self.peer_host}:{self.peer_port}"


@dataclasses.dataclass(slots=True)
class RequestTiming:
    """How long a request waited on others (seconds), for the request-time metrics:
    ``remote``, for replication (acks=all) or for data (a fetch's long poll)."""

    remote: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class RequestContext:
    """One request: its connection's session, its header's facts, and the broker's services."""

    broker: Broker
    session: Session
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    #: The request's size on the wire (what a producer's byte-rate quota counts).
    size: int = 0
    timing: RequestTiming = dataclasses.field(default_factory=RequestTiming)

    @property
    def clock(self) -> Clock:
        return self.broker.clock

    @property
    def quota_client(self) -> tuple[str, str]:
        """(user, client id): who the client quotas know this request's client as."""
        return quota_user(self.session.principal), self.client_id or ""

    def throttle(self, quota: str, value: float) -> int:
        """Records ``value`` against the client's ``quota`` (``quotas.QUOTA_KEYS``); the ms the
        client must now wait, 0 within its quota or without one."""
        return self.broker.quotas.record(quota, *self.quota_client, value, self.clock.monotonic())

    def quota_window(self, quota: str) -> float:
        """The most of ``quota`` one request may use (``QuotaManager.max_in_window``)."""
        return self.broker.quotas.max_in_window(quota, *self.quota_client)

    def unthrottle(self, quota: str, value: float) -> None:
        """Takes back what ``throttle`` recorded (a throttled fetch is answered empty)."""
        self.broker.quotas.unrecord(quota, *self.quota_client, value, self.clock.monotonic())
