"""A blocking connection to a Kafka-protocol broker: TLS and SASL where the listener asks for
them (``security``), ApiVersions negotiation, then one request at a time (used by the
``tidelog`` command-line tools)."""

from __future__ import annotations

import socket
import struct
from typing import Any

from tidelog.protocol import _messages as m
from tidelog.protocol.framing import encode_request, response_header_version
from tidelog.protocol.primitives import Reader
from tidelog.protocol.security import ClientSecurity, SaslClient


class BrokerError(Exception):
    """A request the broker answered with an error code (or refused by closing)."""

    def __init__(self, message: str, code: int = -1) -> None:
        super().__init__(message)
        self.code = code


def connect(bootstrap: str, timeout: float) -> tuple[socket.socket, str]:
    """A connection to the first broker of ``bootstrap`` (Kafka's comma-separated
    ``host:port`` list) that accepts one, and the host it was named by (what TLS checks the
    broker's certificate against); the last error if none does."""
    error: OSError = OSError(f"no broker address in {bootstrap!r}")
    for address in (a.strip() for a in bootstrap.split(",")):
        if not address:
            continue
        host, _, port = address.rpartition(":")
        try:
            host = host or "127.0.0.1"
            return socket.create_connection((host, int(port)), timeout=timeout), host
        except OSError as e:
            error = e
    raise error


class Connection:
    def __init__(
        self,
        bootstrap: str,
        client_id: str = "tidelog-cli",
        timeout: float = 30,
        security: ClientSecurity | None = None,
    ) -> None:
        self.security = security or ClientSecurity()
        self.sock, host = connect(bootstrap, timeout)
        if self.security.tls:
            self.sock = self.security.ssl_context().wrap_socket(self.sock, server_hostname=host)
        self.client_id = client_id
        self.correlation = 0
        self.versions: dict[int, int] = {18: 0}
        resp = self.send(m.ApiVersionsRequest(), version=0)
        if resp.error_code:
            raise BrokerError("ApiVersions failed", resp.error_code)
        for k in resp.api_keys:
            cls = m.REQUESTS.get(k.api_key)
            if cls is not None:
                self.versions[k.api_key] = min(k.max_version, cls.VALID_VERSIONS[1])
        if self.security.sasl:
            self._authenticate()

    def _authenticate(self) -> None:
        """SaslHandshake v1, then SaslAuthenticate until the exchange is done."""
        mechanism = self.security.mechanism
        shake = self.send(m.SaslHandshakeRequest(mechanism=mechanism), version=1)
        if shake.error_code:
            offered = ", ".join(shake.mechanisms)
            raise BrokerError(
                f"the broker does not offer SASL {mechanism} (it offers {offered})", shake.error_code
            )
        client = SaslClient(self.security)
        token: bytes | None = client.first()
        while token is not None:
            r = self.send(m.SaslAuthenticateRequest(auth_bytes=token))
            if r.error_code:
                raise BrokerError(f"SASL authentication failed: {r.error_message}", r.error_code)
            try:
                token = client.step(bytes(r.auth_bytes))
            except ValueError as e:
                raise BrokerError(str(e)) from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, body: Any, version: int | None = None, expect_response: bool = True) -> Any:
        """Sends ``body`` at ``version`` (default: the highest both sides speak)."""
        key = body.API_KEY
        if version is None:
            if key not in self.versions:
                raise BrokerError(f"the broker does not support {type(body).__name__}")
            version = self.versions[key]
        self.correlation += 1
        header = m.RequestHeader(
            request_api_key=key,
            request_api_version=version,
            correlation_id=self.correlation,
            client_id=self.client_id,
        )
        self.sock.sendall(encode_request(header, body, version))
        if not expect_response:
            return None
        (size,) = struct.unpack(">i", self._recv(4))
        r = Reader(self._recv(size))
        got = m.ResponseHeader.decode(r, response_header_version(key, version))
        if got.correlation_id != self.correlation:
            raise BrokerError(
                f"response for correlation id {got.correlation_id}, expected {self.correlation}"
            )
        return m.RESPONSES[key].decode(r, version)

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise BrokerError("the broker closed the connection")
            buf += chunk
        return bytes(buf)
