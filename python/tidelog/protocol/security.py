"""How a client reaches a secured listener: the settings (Kafka's client property names, as
in a ``--command-config`` file), the TLS context, and the SASL exchange on the client's side
(PLAIN, SCRAM-SHA-256/512 through ``scramp``), kept free of I/O so that any transport can
drive it."""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import scramp


_JAAS_OPTION = re.compile(r'(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"')


@dataclasses.dataclass(frozen=True)
class ClientSecurity:
    """``protocol``: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; ``cafile``: the authorities
    the broker's certificate is checked against (None: the system's); ``certfile``/``keyfile``:
    this client's certificate, for brokers that ask for one."""

    protocol: str = "PLAINTEXT"
    mechanism: str = "PLAIN"
    username: str = ""
    password: str = ""
    cafile: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def __repr__(self) -> str:  # never print the password
        return f"ClientSecurity({self.protocol}, {self.mechanism}, user={self.username!r})"

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> ClientSecurity:
        """From Kafka client properties: ``security.protocol``, ``sasl.mechanism``,
        ``sasl.username``/``sasl.password`` (librdkafka's) or ``sasl.jaas.config`` (Java's),
        ``ssl.ca.location`` or a PEM ``ssl.truststore.location``, ``ssl.certificate.location``,
        ``ssl.key.location``. ValueError for a protocol or mechanism this client lacks."""
        protocol = props.get("security.protocol", "PLAINTEXT").upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"security.protocol={protocol} is not one this client speaks")
        mechanism = props.get("sasl.mechanism", "PLAIN").upper()
        if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise ValueError(f"sasl.mechanism={mechanism} is not one this client speaks")
        jaas = dict(_JAAS_OPTION.findall(props.get("sasl.jaas.config", "")))
        return cls(
            protocol,
            mechanism,
            props.get("sasl.username", jaas.get("username", "")),
            props.get("sasl.password", jaas.get("password", "")),
            props.get("ssl.ca.location") or props.get("ssl.truststore.location") or None,
            props.get("ssl.certificate.location") or None,
            props.get("ssl.key.location") or None,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ClientSecurity:
        """From a Kafka client properties file (``key=value`` lines)."""
        props = {}
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith(("#", "!")):
                key, _, value = line.partition("=")
                props[key.strip()] = value.strip()
        return cls.from_properties(props)

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.cafile)
        if self.certfile:
            ctx.load_cert_chain(self.certfile, self.keyfile)
        return ctx


class SaslClient:
    """The client's side of one exchange: ``first()`` is the first token; ``step(answer)``
    takes the broker's answer and gives the next token, or None when the exchange is done
    (having checked, for SCRAM, that the broker knew the password too)."""

    def __init__(self, security: ClientSecurity) -> None:
        self.security = security
        self._scram: scramp.ScramClient | None = None
        self._steps = 0

    def first(self) -> bytes:
        s = self.security
        if s.mechanism == "PLAIN":
            return b"\0" + s.username.encode() + b"\0" + s.password.encode()
        import scramp  # imported by SCRAM's first use: 50 ms at start-up otherwise

        name = s.username.replace("=", "=3D").replace(",", "=2C")
        self._scram = scramp.ScramClient([s.mechanism], name, s.password)
        return str(self._scram.get_client_first()).encode()

    def step(self, answer: bytes) -> bytes | None:
        """The next token after the broker's ``answer``; ValueError if the broker's own proof
        is wrong (a broker that does not know the password)."""
        if self._scram is None:
            return None
        import scramp

        self._steps += 1
        try:
            if self._steps == 1:
                self._scram.set_server_first(answer.decode())
                return str(self._scram.get_client_final()).encode()
            self._scram.set_server_final(answer.decode())
        except scramp.ScramException as e:
            raise ValueError(f"the broker's SCRAM answer is not valid: {e}") from None
        return None
