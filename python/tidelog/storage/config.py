"""Per-log settings, named as Kafka's topic configs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """Settings of one partition log. Attribute names are Kafka's topic config names with
    ``_`` for ``.``; :meth:`from_kafka` takes the dotted names.

    Unlike a Kafka broker (7 days), an embedded log keeps data forever unless ``retention_ms``
    or ``retention_bytes`` is set.
    """

    #: ``segment.bytes``: roll to a new segment past this size.
    segment_bytes: int = 1 << 30
    #: ``segment.ms``: roll a segment this long after it was created or opened.
    segment_ms: int = 7 * 24 * 3600 * 1000
    #: ``segment.index.bytes``: preallocated size of an active segment's indexes.
    segment_index_bytes: int = 10 << 20
    #: ``index.interval.bytes``: log bytes between two offset-index entries.
    index_interval_bytes: int = 4096
    #: ``flush.messages``: fsync after this many appended records (None: only on flush()/roll/close).
    flush_messages: int | None = None
    #: ``flush.ms``: fsync on an append this long after the last fsync (None: never by time).
    flush_ms: int | None = None
    #: ``retention.bytes``: delete oldest inactive segments past this total size (-1: unlimited).
    retention_bytes: int = -1
    #: ``retention.ms``: delete inactive segments whose newest record is older (-1: unlimited).
    retention_ms: int = -1
    #: ``max.message.bytes``: the largest batch accepted.
    max_message_bytes: int = 1_048_588
    #: ``message.timestamp.type``: ``"CreateTime"`` or ``"LogAppendTime"``.
    message_timestamp_type: str = "CreateTime"

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            e = ValueError(f"invalid config {field}: {why}")
            e.field = field  # type: ignore[attr-defined]
            return e

        def whole(field: str, v: object) -> int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise bad(field, f"must be an integer, not {v!r}")
            return v

        if not 14 <= whole("segment.bytes", self.segment_bytes) <= 2**31 - 1:
            raise bad("segment.bytes", "must be between 14 and 2147483647")
        if whole("segment.ms", self.segment_ms) < 1:
            raise bad("segment.ms", "must be at least 1")
        if not 8 <= whole("segment.index.bytes", self.segment_index_bytes) <= 2**31 - 1:
            raise bad("segment.index.bytes", "must be between 8 and 2147483647")
        if whole("index.interval.bytes", self.index_interval_bytes) < 0:
            raise bad("index.interval.bytes", "must not be negative")
        if self.flush_messages is not None and whole("flush.messages", self.flush_messages) < 1:
            raise bad("flush.messages", "must be at least 1")
        if self.flush_ms is not None and whole("flush.ms", self.flush_ms) < 0:
            raise bad("flush.ms", "must not be negative")
        if whole("retention.bytes", self.retention_bytes) < -1:
            raise bad("retention.bytes", "must be -1 (unlimited) or more")
        if whole("retention.ms", self.retention_ms) < -1:
            raise bad("retention.ms", "must be -1 (unlimited) or more")
        if not 61 <= whole("max.message.bytes", self.max_message_bytes) <= 2**31 - 1:
            raise bad("max.message.bytes", "must be between 61 and 2147483647")
        if self.message_timestamp_type not in ("CreateTime", "LogAppendTime"):
            raise bad("message.timestamp.type", "must be CreateTime or LogAppendTime")

    @classmethod
    def from_kafka(cls, settings: Mapping[str, Any]) -> LogConfig:
        """From Kafka-named settings, e.g. ``{"segment.bytes": 1048576}``; values may be strings."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in settings.items():
            attr = name.replace(".", "_")
            if attr not in known:
                e = ValueError(f"unknown log config {name!r}")
                e.field = name  # type: ignore[attr-defined]
                raise e
            if isinstance(value, str) and attr != "message_timestamp_type":
                try:
                    value = int(value)
                except ValueError:
                    e = ValueError(f"invalid config {name}: must be an integer, not {value!r}")
                    e.field = name  # type: ignore[attr-defined]
                    raise e from None
            kwargs[attr] = value
        return cls(**kwargs)

    def to_kafka(self) -> dict[str, Any]:
        """The settings with Kafka's dotted names."""
        return {f.name.replace("_", "."): getattr(self, f.name) for f in dataclasses.fields(self)}

    def core_settings(self) -> dict[str, Any]:
        """The settings as the storage engines take them."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["log_append_time"] = d.pop("message_timestamp_type") == "LogAppendTime"
        return d
