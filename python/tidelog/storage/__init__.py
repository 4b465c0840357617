"""Storage: the engine-neutral embedded API (:class:`Log`, :class:`Topic`) and the
pure-Python engine (``batch``, ``index``, ``segment``, ``log``), twin of ``rust/src``."""

from tidelog.storage.api import AppendResult, Log, OffsetAndTimestamp, RecoveryReport, Topic
from tidelog.storage.config import LogConfig

__all__ = ["AppendResult", "Log", "LogConfig", "OffsetAndTimestamp", "RecoveryReport", "Topic"]
