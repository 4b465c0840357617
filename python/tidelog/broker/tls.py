"""TLS for the SSL and SASL_SSL listeners: the server's context from PEM files
(``ssl.certificate.location``, ``ssl.key.location``, ``ssl.ca.location``,
``ssl.client.auth``), and the principal of a client that presented a certificate, as Kafka's
default principal builder names it (``User:`` and the subject's RFC 2253 distinguished name)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tidelog.broker.config import BrokerConfig

#: The attribute names RFC 2253 writes by their short names (Java's X500Principal does too).
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
#: Seconds a client gets to finish its TLS handshake.
HANDSHAKE_TIMEOUT = 10.0


def server_context(config: BrokerConfig, listener: str) -> ssl.SSLContext:
    """The context TLS listener ``listener`` serves with (its own ``listener.name.<l>.ssl.*``
    settings, else the broker's); ValueError naming the setting that is missing or
    unreadable."""

    def setting(name: str) -> str:
        return config.listener_setting(listener, name)

    cert = setting("ssl.certificate.location")
    if not cert:
        raise ValueError(f"listener {listener} uses TLS but ssl.certificate.location is not set")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, setting("ssl.key.location") or None, setting("ssl.key.password") or None)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot load the TLS certificate or key ({cert}): {e}") from None
    client_auth = setting("ssl.client.auth")
    ca = setting("ssl.ca.location")
    if client_auth != "none":
        if not ca:
            raise ValueError(f"ssl.client.auth={client_auth} on listener {listener} needs ssl.ca.location")
        try:
            ctx.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load ssl.ca.location {ca}: {e}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if client_auth == "required" else ssl.CERT_OPTIONAL
    return ctx


def _escape(value: str) -> str:
    """An attribute value escaped as RFC 2253 requires."""
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def principal_of(cert: dict[str, Any] | None) -> str | None:
    """``User:<subject DN>`` of a verified client certificate (``SSLObject.getpeercert()``),
    most specific attribute first as RFC 2253 writes it; None without one."""
    if not cert or not cert.get("subject"):
        return None
    rdns = [
        "+".join(f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn)
        for rdn in cert["subject"]
    ]
    return "User:" + ",".join(reversed(rdns))
