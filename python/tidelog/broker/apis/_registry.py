"""The registry of request handlers: each registers itself with its API key and the version
range the broker advertises (ApiVersions is derived from it), and what handlers share."""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError

if TYPE_CHECKING:
    from tidelog.broker.server import Broker

log = logging.getLogger("tidelog.broker")
Handler = Callable[["Broker", Any, Any, int], Awaitable[Any]]

#: api key -> its handler, and the (min, max) version advertised. Floors stay low where clients
#: require them (see PROTOCOL-NOTES): Produce 0-2 are advertised but answered UNSUPPORTED_VERSION.
HANDLERS: dict[int, Handler] = {}
ADVERTISED: dict[int, tuple[int, int]] = {}
TRANSACTIONS_UNSUPPORTED = "transactions are not supported by tidelog"
#: The client address of the connection whose request is being handled (one task each).
CURRENT_PEER: contextvars.ContextVar[str] = contextvars.ContextVar("peer", default="")
ZERO_UUID = uuid.UUID(int=0)


def handles(api_key: int, min_version: int, max_version: int) -> Callable[[Handler], Handler]:
    """Registers the handler of ``api_key`` for versions ``min_version..max_version``; a second
    registration of a key is a programming error."""

    def register(f: Handler) -> Handler:
        if api_key in HANDLERS:
            raise RuntimeError(f"api key {api_key} already handled by {HANDLERS[api_key].__qualname__}")
        HANDLERS[api_key] = f
        ADVERTISED[api_key] = (min_version, max_version)
        return f

    return register


def error_code_of(e: BaseException) -> int:
    return e.error_code if isinstance(e, TidelogError) else ec.UNKNOWN_SERVER_ERROR


class RefusedWithoutResponse(Exception):
    """A request that failed but gets no response (acks=0): the connection is closed."""
