"""Exceptions raised by tidelog.

Every exception carries what a caller needs to act on it (the offset, file and byte position
involved) and the Kafka error code it maps to on the wire (``error_code``).
"""

from __future__ import annotations

import os

from tidelog.error_codes import ErrorCode


class TidelogError(Exception):
    """Base class of tidelog's errors."""

    #: Kafka protocol error code for this error.
    error_code: int = ErrorCode.UNKNOWN_SERVER_ERROR


class CorruptRecordError(TidelogError):
    """Bytes that are not a valid RecordBatch v2: bad length, magic, CRC, counts or records.

    For caller-supplied input, ``batch_index`` and ``position`` locate the batch in the input;
    for stored data, ``segment`` is the ``.log`` file, ``directory`` its partition directory and
    ``position`` the byte offset in the segment. Corrupt stored data is never returned.
    """

    error_code = ErrorCode.CORRUPT_MESSAGE

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        segment: str | None = None,
        position: int | None = None,
        batch_index: int | None = None,
        directory: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.segment = segment
        self.position = position
        self.batch_index = batch_index
        self.directory = (
            directory if directory is not None else (os.path.dirname(segment) if segment else None)
        )


class InvalidRecordError(TidelogError):
    """A batch supplied for appending whose CRC is valid but whose records do not parse: bad
    framing or lengths, offset deltas out of order, bytes after the last record. ``reason``
    names the record; ``batch_index`` and ``position`` locate the batch in the input."""

    error_code = ErrorCode.INVALID_RECORD

    def __init__(self, message: str, *, reason: str, batch_index: int, position: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.batch_index = batch_index
        self.position = position


class RecordTooLargeError(TidelogError):
    """A batch larger than ``max.message.bytes``."""

    error_code = ErrorCode.MESSAGE_TOO_LARGE

    def __init__(self, message: str, *, size: int, max_size: int) -> None:
        super().__init__(message)
        self.size = size
        self.max_size = max_size


class OffsetOutOfRangeError(TidelogError):
    """An offset outside ``[start_offset, end_offset]`` of the log."""

    error_code = ErrorCode.OFFSET_OUT_OF_RANGE

    def __init__(self, message: str, *, offset: int, start_offset: int, end_offset: int) -> None:
        super().__init__(message)
        self.offset = offset
        self.start_offset = start_offset
        self.end_offset = end_offset


class InvalidAppendOffsetError(TidelogError):
    """Batches appended with their own offsets that do not continue the log end offset."""

    error_code = ErrorCode.INVALID_RECORD

    def __init__(self, message: str, *, expected: int, actual: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class UnsupportedCompressionError(TidelogError):
    """A batch compressed with a codec that cannot be decoded here."""

    error_code = ErrorCode.UNSUPPORTED_COMPRESSION_TYPE

    def __init__(self, message: str, *, codec: int) -> None:
        super().__init__(message)
        self.codec = codec


class LogClosedError(TidelogError):
    """The log was closed, or a failed write or fsync left it unusable until reopened."""

    error_code = ErrorCode.KAFKA_STORAGE_ERROR


class LogLockedError(TidelogError):
    """Another process has the log directory open."""

    error_code = ErrorCode.KAFKA_STORAGE_ERROR

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class PartitionError(TidelogError):
    """An error about one partition of a broker, which it names (``topic``, ``partition``)."""

    def __init__(self, message: str, *, topic: str, partition: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition


class UnknownTopicOrPartitionError(PartitionError):
    """The partition does not exist here (any more): its topic was deleted while the request
    waited. Retriable: a producer that retries finds the topic re-created, or learns it is gone."""

    error_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class NotLeaderOrFollowerError(PartitionError):
    """The partition's replica here no longer has the role the request or response was for
    (its leadership moved, or it follows another leader now)."""

    error_code = ErrorCode.NOT_LEADER_OR_FOLLOWER


class NotReplicatedError(PartitionError):
    """Records the leader wrote were not acknowledged by its in-sync replicas: the ISR shrank
    below ``min.insync.replicas`` (NOT_ENOUGH_REPLICAS_AFTER_APPEND), the wait timed out
    (REQUEST_TIMED_OUT), or the leadership moved (NOT_LEADER_OR_FOLLOWER). ``end_offset``:
    the offset after the last record that waited. Retriable."""

    def __init__(self, message: str, *, topic: str, partition: int, end_offset: int, error_code: int) -> None:
        super().__init__(message, topic=topic, partition=partition)
        self.end_offset = end_offset
        self.error_code = error_code


class StorageError(TidelogError):
    """An operating-system error while reading or writing the log (ENOSPC, EFBIG, EIO, ...).

    A failed append is never partly visible; data flushed before it stays readable.
    """

    error_code = ErrorCode.KAFKA_STORAGE_ERROR

    def __init__(self, message: str, *, operation: str, path: str, errno: int | None) -> None:
        super().__init__(message)
        self.operation = operation
        self.path = path
        self.errno = errno


__all__ = [
    "CorruptRecordError",
    "InvalidAppendOffsetError",
    "InvalidRecordError",
    "LogClosedError",
    "LogLockedError",
    "OffsetOutOfRangeError",
    "RecordTooLargeError",
    "StorageError",
    "TidelogError",
    "UnknownTopicOrPartitionError",
    "NotLeaderOrFollowerError",
    "PartitionError",
    "UnsupportedCompressionError",
]
