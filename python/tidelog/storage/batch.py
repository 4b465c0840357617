"""Validation and offset assignment of a buffer of batches: the pure-Python twin of
``rust/src/batch.rs``."""

from __future__ import annotations

import struct

from tidelog._crc32c import crc32c
from tidelog.errors import (
    CorruptRecordError,
    InvalidAppendOffsetError,
    InvalidRecordError,
    RecordTooLargeError,
)
from tidelog.records import (
    CRC_START,
    HEADER_LEN,
    TIMESTAMP_TYPE_LOG_APPEND,
    BatchHeader,
    Compression,
    Incomplete,
    check_batch,
    decode_section,
    decompress,
    parse_header,
)


def _corrupt(index: int, pos: int, reason: str) -> CorruptRecordError:
    return CorruptRecordError(
        f"corrupt record batch {index} at byte {pos} of the input: {reason}",
        reason=reason,
        batch_index=index,
        position=pos,
    )


def _check_records(batch: memoryview, h: BatchHeader, index: int) -> None:
    """As Kafka's LogValidator: a known codec whose body decompresses (else CORRUPT_MESSAGE),
    then records that parse, with offset deltas 0, 1, 2... and nothing after the last
    (else INVALID_RECORD)."""
    section = bytes(batch[HEADER_LEN:])
    if h.compression > Compression.ZSTD:
        raise _corrupt(index, h.position, f"unknown compression codec {h.compression}")
    try:
        data = section if h.compression == 0 else decompress(h.compression, section)
    except ValueError as e:
        raise _corrupt(index, h.position, str(e)) from None
    try:
        decode_section(data, h, min_offset=h.base_offset, strict=True)
    except ValueError as e:
        raise InvalidRecordError(
            f"invalid record in batch {index} at byte {h.position} of the input: {e}",
            reason=str(e),
            batch_index=index,
            position=h.position,
        ) from None


def validate_batches(
    buf: bytes | bytearray | memoryview, max_batch_size: int, next_offset: int | None
) -> list[BatchHeader]:
    """Checks framing, magic, CRC, counts and size of every batch.

    ``next_offset`` None: the log assigns offsets, so every batch must carry base offset 0;
    otherwise the batches keep their offsets, which must continue ``next_offset`` exactly.
    """
    if len(buf) == 0:
        raise _corrupt(0, 0, "no record batch in the input")
    out: list[BatchHeader] = []
    pos = 0
    while pos < len(buf):
        index = len(out)
        try:
            h = parse_header(buf, pos)
        except Incomplete:
            raise _corrupt(index, pos, "truncated batch: fewer bytes than its length field") from None
        except ValueError as e:
            raise _corrupt(index, pos, str(e)) from None
        if h.size > max_batch_size:
            raise RecordTooLargeError(
                f"record batch of {h.size} bytes exceeds max.message.bytes={max_batch_size}",
                size=h.size,
                max_size=max_batch_size,
            )
        problem = check_batch(memoryview(buf)[pos : pos + h.size], h)
        if problem:
            raise _corrupt(index, pos, problem)
        _check_records(memoryview(buf)[pos : pos + h.size], h, index)
        if next_offset is None:
            if h.base_offset != 0:
                raise _corrupt(
                    index,
                    pos,
                    f"base offset {h.base_offset} where the broker assigns offsets (expected 0)",
                )
        else:
            if h.base_offset != next_offset:
                raise InvalidAppendOffsetError(
                    f"appended batch starts at offset {h.base_offset} but the log end offset "
                    f"is {next_offset}",
                    expected=next_offset,
                    actual=h.base_offset,
                )
            next_offset = h.next_offset
        pos += h.size
        out.append(h)
    return out


def assign_offsets(
    buf: bytearray,
    batches: list[BatchHeader],
    first_offset: int,
    leader_epoch: int,
    log_append_time: int | None,
) -> list[BatchHeader]:
    """Rewrites base offsets and leader epochs in place (and LogAppendTime, recomputing the CRC);
    returns the updated headers."""
    out = []
    nxt = first_offset
    for h in batches:
        p = h.position
        struct.pack_into(">q", buf, p, nxt)
        struct.pack_into(">i", buf, p + 12, leader_epoch)
        h = h._replace(base_offset=nxt, partition_leader_epoch=leader_epoch)
        if log_append_time is not None:
            attributes = h.attributes | TIMESTAMP_TYPE_LOG_APPEND
            struct.pack_into(">h", buf, p + 21, attributes)
            struct.pack_into(">q", buf, p + 35, log_append_time)
            crc = crc32c(memoryview(buf)[p + CRC_START : p + h.size])
            struct.pack_into(">I", buf, p + 17, crc)
            h = h._replace(attributes=attributes, max_timestamp=log_append_time)
        out.append(h)
        nxt = h.next_offset
    return out
