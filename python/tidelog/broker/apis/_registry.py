"""The registry of request handlers: each registers itself with its API key and the version
range the broker advertises (ApiVersions is derived from it), and what handlers share."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tidelog.error_codes import ErrorCode as ec
from tidelog.errors import TidelogError
from tidelog.protocol.codec import Message

if TYPE_CHECKING:
    from tidelog.broker.context import RequestContext

log = logging.getLogger("tidelog.broker")
Req = TypeVar("Req", bound=Message)
#: A handler: the request's context and its decoded body -> the response (None: no response,
#: as for acks=0).
Handler = Callable[["RequestContext", Any], Awaitable[Message | None]]

#: api key -> its handler, and the (min, max) version advertised. Floors stay low where clients
#: require them (see PROTOCOL-NOTES): Produce 0-2 are advertised but answered UNSUPPORTED_VERSION.
HANDLERS: dict[int, Handler] = {}
ADVERTISED: dict[int, tuple[int, int]] = {}
TRANSACTIONS_UNSUPPORTED = "transactions are not supported by tidelog"
ZERO_UUID = uuid.UUID(int=0)


def handles(
    request: type[Req], min_version: int, max_version: int
) -> Callable[
    [Callable[[RequestContext, Req], Awaitable[Message | None]]],
    Callable[[RequestContext, Req], Awaitable[Message | None]],
]:
    """Registers the handler of ``request``'s API for versions ``min_version..max_version``;
    mypy checks that the handler takes that request class, and a second registration of a
    key is a programming error."""
    api_key = request.API_KEY

    def register(
        f: Callable[[RequestContext, Req], Awaitable[Message | None]],
    ) -> Callable[[RequestContext, Req], Awaitable[Message | None]]:
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
