"""Request handlers by API family, one module each; importing this package registers them
all (see ``_registry``)."""

from tidelog.broker.apis import (  # noqa: F401  (each registers its handlers)
    acls,
    cluster,
    configs,
    fetch,
    groups,
    offsets,
    produce,
    producer_ids,
    quotas,
    sasl,
    topics,
    users,
)
from tidelog.broker.apis._registry import ADVERTISED, HANDLERS, RefusedWithoutResponse

__all__ = ["ADVERTISED", "HANDLERS", "RefusedWithoutResponse"]
