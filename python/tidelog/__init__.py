"""tidelog: a Kafka-compatible streaming log for Python.

The embedded log::

    import tidelog
    with tidelog.Log.open("data/orders-0") as log:
        first = log.append([(b"k", b"v")])
        for record in log.read(first):
            print(record.offset, record.value)
"""

from tidelog import errors
from tidelog._engine import engine, rust_available
from tidelog.records import Compression, Record
from tidelog.storage import AppendResult, Log, LogConfig, OffsetAndTimestamp, RecoveryReport, Topic

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # The broker (and Trio) load only when asked for: the embedded log does not need them.
    if name in ("Broker", "BrokerConfig"):
        from tidelog import broker

        return getattr(broker, name)
    raise AttributeError(f"module 'tidelog' has no attribute {name!r}")


__all__ = [
    "AppendResult",
    "Broker",
    "BrokerConfig",
    "Compression",
    "Log",
    "LogConfig",
    "OffsetAndTimestamp",
    "Record",
    "RecoveryReport",
    "Topic",
    "engine",
    "errors",
    "rust_available",
]
