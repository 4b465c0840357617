"""SaslHandshake (v0-1) and SaslAuthenticate (v0-2), as Kafka's ``SaslServerAuthenticator``
answers them. On a SASL listener a connection starts unauthenticated: it may ask
ApiVersions, choose a mechanism (SaslHandshake) and exchange tokens (SaslAuthenticate, or
bare frames after a v0 handshake); the connection closes on any other request (see
``connection``). A handshake naming a mechanism not offered gets UNSUPPORTED_SASL_MECHANISM
with the ones that are; a token out of turn gets ILLEGAL_SASL_STATE; refused credentials get
SASL_AUTHENTICATION_FAILED with a message that does not say whether the user exists. Each of
these closes the connection after its answer, with one log line naming the client's address.

With ``connections.max.reauth.ms`` a session lasts that long: SaslAuthenticate v1+ tells the
client, which re-authenticates on the same connection (KIP-368) with the same mechanism and
as the same principal; a connection whose session has ended is closed at its next request.
On a listener without SASL, or after authentication without re-authentication configured,
SaslHandshake is ILLEGAL_SASL_STATE, as in Kafka."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tidelog.broker.apis._registry import handles
from tidelog.broker.config import SASL_PROTOCOLS, sasl_mechanisms
from tidelog.broker.sasl import AuthenticationFailed, plain_users, server_for
from tidelog.error_codes import ErrorCode as ec
from tidelog.protocol import _messages as m
from tidelog.scram import ScramCredential, ScramMechanism

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext, Session
    from tidelog.broker.server import Broker

log = logging.getLogger("tidelog.broker")


def enabled_mechanisms(broker: Broker, listener: str) -> list[str]:
    return sasl_mechanisms(broker.config.listener_setting(listener, "sasl.enabled.mechanisms"))


@handles(m.SaslHandshakeRequest, 0, 1)
async def sasl_handshake(ctx: RequestContext, req: m.SaslHandshakeRequest) -> m.SaslHandshakeResponse:
    session, broker = ctx.session, ctx.broker
    offered = enabled_mechanisms(broker, session.listener)
    R = m.SaslHandshakeResponse
    reauthenticating = session.authenticated and session.sasl_expires_at is not None
    if session.security_protocol not in SASL_PROTOCOLS or (session.authenticated and not reauthenticating):
        return R(error_code=ec.ILLEGAL_SASL_STATE, mechanisms=offered)
    if session.sasl is not None:  # a second handshake in the middle of an exchange
        session.close_reason = "SaslHandshake while a SASL exchange was under way"
        return R(error_code=ec.ILLEGAL_SASL_STATE, mechanisms=offered)
    if req.mechanism not in offered or (reauthenticating and req.mechanism != session.sasl_mechanism):
        why = f"SASL mechanism {req.mechanism!r} is not offered ({', '.join(offered)})"
        if reauthenticating:
            why = f"re-authentication may not change the SASL mechanism to {req.mechanism!r}"
        failed(broker, session, why)
        return R(error_code=ec.UNSUPPORTED_SASL_MECHANISM, mechanisms=offered)

    def credential(user: str, mechanism: ScramMechanism) -> ScramCredential | None:
        return broker.image.scram_credentials.get(user, {}).get(mechanism)

    session.sasl_mechanism = req.mechanism
    session.sasl = server_for(
        req.mechanism,
        plain_users(broker.config.listener_setting(session.listener, "sasl.jaas.config", req.mechanism)),
        credential,
    )
    session.sasl_raw_tokens = ctx.api_version == 0
    return R(error_code=ec.NONE, mechanisms=offered)


def failed(broker: Broker, session: Session, why: str) -> None:
    """The connection closes, after ``connection.failed.authentication.delay.ms``."""
    broker.metrics.authentication_failures[session.listener] += 1
    session.close_reason = why
    session.close_delay = int(broker.config.setting("connection.failed.authentication.delay.ms")) / 1000


def authenticate_step(broker: Broker, session: Session, token: bytes) -> tuple[bytes, int]:
    """One client token of the exchange under way: the server's token and, once the client
    has authenticated, its session's lifetime in ms (0: unlimited; also 0 mid-exchange).
    AuthenticationFailed when the credentials are refused (``session.close_reason`` set)."""
    exchange = session.sasl
    assert exchange is not None
    try:
        answer = exchange.step(token)
        principal = exchange.principal
        if principal is not None and session.authenticated and principal != session.principal:
            raise AuthenticationFailed(
                f"Cannot change principals during re-authentication from {session.principal}: {principal}"
            )
    except AuthenticationFailed as e:
        session.sasl = None
        failed(broker, session, f"SASL {session.sasl_mechanism} authentication failed: {e}")
        raise
    if principal is None:
        return answer, 0
    session.sasl = None
    session.principal, session.authenticated = principal, True
    broker.metrics.authentication_successes[session.listener] += 1
    lifetime_ms = int(
        broker.config.listener_setting(session.listener, "connections.max.reauth.ms", session.sasl_mechanism)
    )
    if lifetime_ms > 0:
        session.sasl_expires_at = broker.clock.monotonic() + lifetime_ms / 1000
    log.debug("%s authenticated as %s with %s", session.peer, principal, session.sasl_mechanism)
    return answer, max(lifetime_ms, 0)


@handles(m.SaslAuthenticateRequest, 0, 2)
async def sasl_authenticate(
    ctx: RequestContext, req: m.SaslAuthenticateRequest
) -> m.SaslAuthenticateResponse:
    session = ctx.session
    R = m.SaslAuthenticateResponse
    if session.sasl is None or session.sasl_raw_tokens:
        session.close_reason = "SaslAuthenticate without a SaslHandshake v1 before it"
        return R(
            error_code=ec.ILLEGAL_SASL_STATE,
            error_message="SaslAuthenticate is only answered after a SaslHandshake v1",
            auth_bytes=b"",
            session_lifetime_ms=0,
        )
    try:
        answer, lifetime_ms = authenticate_step(ctx.broker, session, bytes(req.auth_bytes))
    except AuthenticationFailed as e:
        return R(
            error_code=ec.SASL_AUTHENTICATION_FAILED,
            error_message=str(e),
            auth_bytes=b"",
            session_lifetime_ms=0,
        )
    return R(error_code=ec.NONE, error_message=None, auth_bytes=answer, session_lifetime_ms=lifetime_ms)
