"""SASL authentication on the broker's side: the mechanisms (PLAIN against the users of the
broker's configuration, SCRAM-SHA-256/512 against the credentials in the metadata, through
``scramp``) and one connection's exchange, fed token by token by SaslAuthenticate (or by raw
frames after a SaslHandshake v0).

A failure's message never says whether the user exists or which step failed (as Kafka's
``SaslServerAuthenticator``), and nothing here logs or keeps a password."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Mapping
from typing import Protocol

from tidelog.scram import ScramCredential, ScramMechanism

PLAIN = "PLAIN"
#: What ``sasl.enabled.mechanisms`` may name.
MECHANISMS = (PLAIN, "SCRAM-SHA-256", "SCRAM-SHA-512")


class AuthenticationFailed(Exception):
    """The client's credentials were refused: SASL_AUTHENTICATION_FAILED with this message,
    then the connection closes."""


class MechanismServer(Protocol):
    """One exchange of one mechanism: each client token in, the server's token out, until
    ``principal`` is set."""

    principal: str | None

    def step(self, token: bytes) -> bytes: ...


#: (user, mechanism) -> that user's credential, or None.
CredentialLookup = Callable[[str, ScramMechanism], ScramCredential | None]


class PlainServer:
    """RFC 4616: one token, ``authzid NUL authcid NUL password``; the authorization id, if
    given, must be the user's own (Kafka does not allow impersonation)."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = users
        self.principal: str | None = None

    def step(self, token: bytes) -> bytes:
        parts = token.split(b"\0")
        if len(parts) != 3:
            raise AuthenticationFailed("Invalid SASL/PLAIN response: expected 3 tokens")
        try:
            authzid, user, password = (p.decode() for p in parts)
        except UnicodeDecodeError:
            raise AuthenticationFailed("Invalid SASL/PLAIN response: not UTF-8") from None
        if not user or not password:
            raise AuthenticationFailed("Authentication failed: username or password not specified")
        if authzid and authzid != user:
            raise AuthenticationFailed(
                "Authentication failed: Client requested an authorization id that is different from username"
            )
        expected = self.users.get(user)
        # Compared in constant time, and against something even for an unknown user.
        if not hmac.compare_digest((expected or "\0" + password).encode(), password.encode()):
            raise AuthenticationFailed("Authentication failed: Invalid username or password")
        self.principal = f"User:{user}"
        return b""


class ScramServer:
    """RFC 5802 without channel binding (Kafka's SCRAM): client-first, server-first,
    client-final, server-final."""

    def __init__(self, mechanism: ScramMechanism, lookup: CredentialLookup) -> None:
        self.mechanism = mechanism
        self._user = ""

        def auth_info(saslname: str) -> tuple[bytes, bytes, bytes, int] | None:
            self._user = saslname.replace("=2C", ",").replace("=3D", "=")
            cred = lookup(self._user, mechanism)
            return None if cred is None else (cred.salt, cred.stored_key, cred.server_key, cred.iterations)

        import scramp  # imported by SCRAM's first use: 50 ms at start-up otherwise

        self._server = scramp.ScramMechanism(mechanism.mechanism_name).make_server(auth_info)
        self._steps = 0
        self.principal: str | None = None

    def step(self, token: bytes) -> bytes:
        import scramp

        try:
            message = token.decode()
            self._steps += 1
            if self._steps == 1:
                self._server.set_client_first(message)
                return str(self._server.get_server_first()).encode()
            if self._steps == 2:
                self._server.set_client_final(message)
                final = str(self._server.get_server_final()).encode()
                self.principal = f"User:{self._user}"
                return final
        except (scramp.ScramException, UnicodeDecodeError, ValueError, KeyError):
            pass
        raise AuthenticationFailed(
            f"Authentication failed during authentication due to invalid credentials with SASL mechanism "
            f"{self.mechanism.mechanism_name}"
        )


def server_for(mechanism: str, plain_users: Mapping[str, str], lookup: CredentialLookup) -> MechanismServer:
    """A new exchange of ``mechanism`` (one of ``MECHANISMS``)."""
    if mechanism == PLAIN:
        return PlainServer(plain_users)
    return ScramServer(ScramMechanism.of(mechanism), lookup)


_JAAS_USER = re.compile(r'user_([^\s=]+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def plain_users(jaas: str) -> dict[str, str]:
    """The ``user_<name>="<password>"`` entries of a PlainLoginModule's JAAS text (Kafka's
    ``sasl.jaas.config``): PLAIN's users."""
    return {name: password.replace('\\"', '"') for name, password in _JAAS_USER.findall(jaas)}
