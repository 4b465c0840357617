"""SCRAM credentials as Kafka keeps them (RFC 5802, KIP-554): a salt, an iteration count and
the two keys derived from the salted password. The password itself is never stored, and
neither is the salted password: a client sends the salted password once
(AlterUserScramCredentials) and the broker keeps only what verifies a proof."""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

#: Kafka's bounds on a credential's iteration count (``ScramMechanism.minIterations``,
#: ``ScramControlManager.MAX_ITERATIONS``).
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384


class ScramMechanism(enum.IntEnum):
    """The mechanism types of AlterUserScramCredentials / DescribeUserScramCredentials."""

    UNKNOWN = 0
    SCRAM_SHA_256 = 1
    SCRAM_SHA_512 = 2

    @property
    def mechanism_name(self) -> str:
        """The SASL name: ``SCRAM-SHA-256``."""
        return self.name.replace("_", "-")

    @property
    def hash_name(self) -> str:
        return {ScramMechanism.SCRAM_SHA_256: "sha256", ScramMechanism.SCRAM_SHA_512: "sha512"}[self]

    @classmethod
    def of(cls, value: int | str) -> ScramMechanism:
        """The mechanism with this type number or SASL name; UNKNOWN for any other."""
        for m in cls:
            if m is not cls.UNKNOWN and value in (m.value, m.mechanism_name):
                return m
        return cls.UNKNOWN


@dataclasses.dataclass(frozen=True, slots=True)
class ScramCredential:
    """What verifies a user's proof for one mechanism."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def __repr__(self) -> str:  # never print key material, even in a traceback
        return f"ScramCredential(iterations={self.iterations}, salt=[hidden], keys=[hidden])"

    @classmethod
    def from_salted_password(
        cls, mechanism: ScramMechanism, salt: bytes, salted_password: bytes, iterations: int
    ) -> ScramCredential:
        """The credential for the salted password a client sent (AlterUserScramCredentials)."""
        h = mechanism.hash_name
        client_key = hmac.digest(salted_password, b"Client Key", h)
        server_key = hmac.digest(salted_password, b"Server Key", h)
        return cls(salt, hashlib.new(h, client_key).digest(), server_key, iterations)


def salted_password(mechanism: ScramMechanism, password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802's ``Hi(password, salt, i)``: what a client sends to set a credential."""
    return hashlib.pbkdf2_hmac(mechanism.hash_name, password.encode(), salt, iterations)


def new_salt() -> bytes:
    return os.urandom(32)


#: A user's credentials, by mechanism.
UserCredentials = Mapping[ScramMechanism, ScramCredential]
#: A change to a user's credentials: mechanism -> the new credential, or None to remove it.
CredentialChanges = Mapping[ScramMechanism, ScramCredential | None]


def altered(current: UserCredentials, changes: CredentialChanges) -> dict[ScramMechanism, ScramCredential]:
    """A user's credentials after ``changes``."""
    out = dict(current)
    for mechanism, cred in changes.items():
        if cred is None:
            out.pop(mechanism, None)
        else:
            out[mechanism] = cred
    return out


def credentials_doc(creds: UserCredentials) -> dict[str, Any]:
    """A user's credentials as stored in the metadata (JSON, keys in base64)."""
    b64 = base64.b64encode
    return {
        m.mechanism_name: {
            "salt": b64(c.salt).decode(),
            "stored_key": b64(c.stored_key).decode(),
            "server_key": b64(c.server_key).decode(),
            "iterations": c.iterations,
        }
        for m, c in creds.items()
    }


def credentials_from_doc(doc: Mapping[str, Any]) -> dict[ScramMechanism, ScramCredential]:
    """``credentials_doc``'s inverse; ValueError or KeyError if ``doc`` is not one."""
    out: dict[ScramMechanism, ScramCredential] = {}
    for name, c in doc.items():
        mechanism = ScramMechanism.of(name)
        if mechanism is ScramMechanism.UNKNOWN:
            raise ValueError(f"unknown SCRAM mechanism {name!r}")
        d = base64.b64decode
        out[mechanism] = ScramCredential(
            d(c["salt"]), d(c["stored_key"]), d(c["server_key"]), int(c["iterations"])
        )
    return out
