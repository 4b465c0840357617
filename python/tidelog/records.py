"""Kafka RecordBatch v2: build and decode batches, with every compression codec.

Pure Python. gzip uses the standard library; snappy, lz4 and zstd use the optional
``cramjam`` package (``pip install tidelog[compression]``), and raise
:class:`~tidelog.errors.UnsupportedCompressionError` without it.
"""

from __future__ import annotations

import enum
import gzip
import io
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from tidelog._crc32c import crc32c
from tidelog.errors import CorruptRecordError, UnsupportedCompressionError

#: Headers of a record: (key, value) pairs; keys are str, values bytes or None.
Headers = tuple[tuple[str, bytes | None], ...]

LOG_OVERHEAD = 12
HEADER_LEN = 61
MAGIC = 2
CRC_START = 21
COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_LOG_APPEND = 0x08
TRANSACTIONAL = 0x10
CONTROL = 0x20
MAX_DECOMPRESSED_BYTES = 256 << 20

_HEADER = struct.Struct(">qiibIhiqqqhii")
_XERIAL_MAGIC = b"\x82SNAPPY\x00"


class PyRecord:
    """One record of a log: ``offset``, ``timestamp`` (ms), ``key``, ``value`` (bytes or None)
    and ``headers`` (tuple of (str, bytes | None)). Immutable; compares, hashes, unpacks and
    indexes like the tuple of its fields.

    This is the pure-Python class; with the compiled core present, ``tidelog.Record`` is its
    Rust twin ``tidelog._core.Record`` (same behaviour, created without Python-level calls).
    """

    __slots__ = ("headers", "key", "offset", "timestamp", "value")
    __match_args__ = ("offset", "timestamp", "key", "value", "headers")

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def __init__(
        self,
        offset: int,
        timestamp: int,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Iterable[tuple[str, bytes | None]] | None = None,
    ) -> None:
        set_field = object.__setattr__
        set_field(self, "offset", int(offset))
        set_field(self, "timestamp", int(timestamp))
        set_field(self, "key", key)
        set_field(self, "value", value)
        set_field(self, "headers", tuple(tuple(h) for h in headers) if headers else ())

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Record is immutable: cannot set {name!r}")

    def _fields(self) -> tuple[int, int, bytes | None, bytes | None, Headers]:
        return (self.offset, self.timestamp, self.key, self.value, self.headers)

    def __repr__(self) -> str:
        return (
            f"Record(offset={self.offset!r}, timestamp={self.timestamp!r}, key={self.key!r}, "
            f"value={self.value!r}, headers={self.headers!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PyRecord):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> Any:
        return self._fields()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._fields())

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (type(self), self._fields())


if TYPE_CHECKING:
    Record = PyRecord
else:
    try:
        from tidelog._core import Record
    except ImportError:
        Record = PyRecord


class Compression(enum.IntEnum):
    """Batch compression codecs (attribute bits 0-2)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


class BatchHeader(NamedTuple):
    """The fixed header of one batch and its position in the buffer or file it came from."""

    position: int
    size: int
    base_offset: int
    partition_leader_epoch: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_LOG_APPEND)


class Incomplete(Exception):
    """Fewer bytes remain than the header or its declared length needs."""


def parse_header(
    buf: bytes | bytearray | memoryview, pos: int, file_position: int = 0, header_only: bool = False
) -> BatchHeader:
    """The header of the batch at ``pos``; checks length and magic, not the CRC.

    Raises :class:`Incomplete` for a torn batch (with ``header_only``, only if the fixed header
    itself is cut) and ``ValueError`` (with the reason) for an invalid one.
    """
    rest = len(buf) - pos
    if rest < LOG_OVERHEAD:
        raise Incomplete
    (length,) = struct.unpack_from(">i", buf, pos + 8)
    if length < HEADER_LEN - LOG_OVERHEAD:
        raise ValueError(f"batch length {length} is shorter than a batch header")
    if rest > 16 and buf[pos + 16] != MAGIC:
        magic = buf[pos + 16] - 256 if buf[pos + 16] > 127 else buf[pos + 16]
        raise ValueError(f"magic byte {magic} (only record format v2 is supported)")
    size = length + LOG_OVERHEAD
    if rest < (HEADER_LEN if header_only else size):
        raise Incomplete
    f = _HEADER.unpack_from(buf, pos)
    return BatchHeader(
        file_position + pos, size, f[0], f[2], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12]
    )


def check_batch(batch: bytes | bytearray | memoryview, h: BatchHeader) -> str | None:
    """What is wrong with a batch beyond its header (CRC, counts), or None."""
    if h.last_offset_delta < 0 or h.last_offset_delta + 1 != h.records_count:
        return f"lastOffsetDelta {h.last_offset_delta} does not match recordsCount {h.records_count}"
    (stored,) = struct.unpack_from(">I", batch, 17)
    computed = crc32c(memoryview(batch)[CRC_START:])
    if stored != computed:
        return f"CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"
    return None


# ---- varints (zig-zag) ----


def put_varlong(out: bytearray, v: int) -> None:
    u = ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF
    while u >= 0x80:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)


def varlong_len(v: int) -> int:
    u = ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF
    return max(1, -(-u.bit_length() // 7))


def get_varlong(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, new position); raises ValueError on truncation or an over-long encoding."""
    u = 0
    for i in range(10):
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        u |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return (u >> 1) ^ -(u & 1), pos
    raise ValueError("varint longer than 10 bytes")


def get_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    v, pos = get_varlong(buf, pos)
    if not -(1 << 31) <= v < (1 << 31):
        raise ValueError("varint out of int32 range")
    return v, pos


# ---- building ----


def as_bytes(obj: object, what: str) -> bytes | None:
    """A key, value or header value as bytes: str is UTF-8 encoded, None stays None."""
    if obj is None or isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    raise TypeError(f"{what} must be bytes, str, a bytes-like object or None, not {type(obj).__name__}")


def normalize(
    records: Iterable[Any], now_ms: int
) -> list[tuple[int, bytes | None, bytes | None, list[tuple[bytes, bytes | None]]]]:
    """Items (key, value), (key, value, headers) or Records as (timestamp, key, value, headers)."""
    out = []
    for item in records:
        if isinstance(item, Record):
            ts, key, value, headers = item.timestamp, item.key, item.value, item.headers
        elif not isinstance(item, tuple):
            raise TypeError("each record must be a tuple (key, value[, headers]) or a Record")
        elif (n := len(item)) == 2:
            ts, key, value, headers = now_ms, item[0], item[1], None
        elif n == 3:
            ts, key, value, headers = now_ms, item[0], item[1], item[2]
        elif n == 5:
            ts = now_ms if item[1] is None else int(item[1])
            key, value, headers = item[2], item[3], item[4]
        else:
            raise TypeError(f"a record tuple has 2, 3 or 5 items, not {n}")
        hs = []
        for hk, hv in headers or ():
            if hk is None:
                raise TypeError("a header key must be str or bytes, not None")
            hs.append((as_bytes(hk, "key") or b"", as_bytes(hv, "value")))
        out.append((ts, as_bytes(key, "key"), as_bytes(value, "value"), hs))
    if not out:
        raise ValueError("append needs at least one record")
    return out


def _put_bytes(out: bytearray, b: bytes | None) -> None:
    if b is None:
        put_varlong(out, -1)
    else:
        put_varlong(out, len(b))
        out += b


def _bytes_len(b: bytes | None) -> int:
    return 1 if b is None else varlong_len(len(b)) + len(b)


def encode_records(
    records: Sequence[tuple[int, bytes | None, bytes | None, Sequence[tuple[bytes, bytes | None]]]],
    base_timestamp: int,
) -> bytearray:
    """The records section of a batch (uncompressed)."""
    out = bytearray()
    for delta, (ts, key, value, headers) in enumerate(records):
        ts_delta = ts - base_timestamp
        body = 1 + varlong_len(ts_delta) + varlong_len(delta) + _bytes_len(key) + _bytes_len(value)
        body += varlong_len(len(headers))
        for hk, hv in headers:
            body += _bytes_len(hk) + _bytes_len(hv)
        put_varlong(out, body)
        out.append(0)
        put_varlong(out, ts_delta)
        put_varlong(out, delta)
        _put_bytes(out, key)
        _put_bytes(out, value)
        put_varlong(out, len(headers))
        for hk, hv in headers:
            _put_bytes(out, hk)
            _put_bytes(out, hv)
    return out


def build_batch(
    records: Iterable[Any],
    *,
    compression: Compression | int = Compression.NONE,
    now_ms: int = 0,
    base_offset: int = 0,
    partition_leader_epoch: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
) -> bytes:
    """One RecordBatch v2 holding ``records`` (items as accepted by ``Log.append``).

    As Kafka's MemoryRecordsBuilder: baseTimestamp is the first record's timestamp.
    Records without a timestamp get ``now_ms``.
    """
    norm = normalize(records, now_ms)
    base_ts = norm[0][0]
    max_ts = max(r[0] for r in norm)
    body = bytes(encode_records(norm, base_ts))
    codec = Compression(compression)
    if codec != Compression.NONE:
        body = compress(codec, body)
    attributes = int(codec) | (TRANSACTIONAL if transactional else 0)
    return finish_batch(
        body,
        base_offset,
        partition_leader_epoch,
        attributes,
        len(norm) - 1,
        base_ts,
        max_ts,
        producer_id,
        producer_epoch,
        base_sequence,
        len(norm),
    )


def finish_batch(
    body: bytes,
    base_offset: int,
    partition_leader_epoch: int,
    attributes: int,
    last_offset_delta: int,
    base_timestamp: int,
    max_timestamp: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    records_count: int,
) -> bytes:
    """Prepends the batch header to a records section and computes the CRC."""
    out = bytearray(HEADER_LEN)
    out += body
    _HEADER.pack_into(
        out,
        0,
        base_offset,
        len(out) - LOG_OVERHEAD,
        partition_leader_epoch,
        MAGIC,
        0,
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        records_count,
    )
    struct.pack_into(">I", out, 17, crc32c(memoryview(out)[CRC_START:]))
    return bytes(out)


# ---- compression ----


def _cramjam(codec: int) -> Any:
    try:
        import cramjam
    except ImportError:
        raise UnsupportedCompressionError(
            f"compression codec {codec} needs the 'cramjam' package (pip install 'tidelog[compression]')",
            codec=codec,
        ) from None
    return cramjam


def compress(codec: int, data: bytes) -> bytes:
    """Compresses a records section as Kafka's producers do (snappy: raw, lz4: frame)."""
    if codec == Compression.GZIP:
        return gzip.compress(data, mtime=0)
    cj = _cramjam(codec)
    if codec == Compression.SNAPPY:
        return bytes(cj.snappy.compress_raw(data))
    if codec == Compression.LZ4:
        return bytes(cj.lz4.compress(data))
    if codec == Compression.ZSTD:
        return bytes(cj.zstd.compress(data))
    raise UnsupportedCompressionError(f"unsupported compression codec {codec}", codec=codec)


def decompress(codec: int, data: bytes) -> bytes:
    """Decompresses a records section; raises ValueError for undecodable data."""
    try:
        if codec == Compression.GZIP:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                out = f.read(MAX_DECOMPRESSED_BYTES + 1)
        elif codec == Compression.SNAPPY:
            out = _snappy_decompress(_cramjam(codec), data)
        elif codec == Compression.LZ4:
            out = bytes(_cramjam(codec).lz4.decompress(data))
        elif codec == Compression.ZSTD:
            out = bytes(_cramjam(codec).zstd.decompress(data))
        else:
            raise UnsupportedCompressionError(f"unsupported compression codec {codec}", codec=codec)
    except (UnsupportedCompressionError, ValueError):
        raise
    except Exception as e:  # codec libraries raise their own types
        raise ValueError(f"{Compression(codec).name.lower()} decompression failed: {e}") from e
    if len(out) > MAX_DECOMPRESSED_BYTES:
        raise ValueError(f"batch decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes")
    return out


def _snappy_decompress(cj: Any, data: bytes) -> bytes:
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(cj.snappy.decompress_raw(data))
    # Xerial framing (snappy-java): 16-byte header, then [int32 length][raw block]...
    out = bytearray()
    pos = 16
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("snappy: truncated xerial block length")
        (n,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if pos + n > len(data):
            raise ValueError("snappy: truncated xerial block")
        out += bytes(cj.snappy.decompress_raw(data[pos : pos + n]))
        pos += n
    return bytes(out)


# ---- decoding ----


def _read_bytes(buf: bytes, pos: int, limit: int) -> tuple[bytes | None, int]:
    """A length-prefixed field that must end by ``limit`` (the end of its record)."""
    n, pos = get_varint(buf, pos)
    if n < 0:
        if n != -1:
            raise ValueError("negative length")
        return None, pos
    end = pos + n
    if end > limit:
        raise ValueError("truncated")
    return buf[pos:end], end


def decode_records(
    batch: bytes | bytearray | memoryview, h: BatchHeader, min_offset: int = 0, max_records: int = -1
) -> list[Record]:
    """Records of one (CRC-checked) batch with offset >= ``min_offset``.

    Raises ValueError naming the bad record, or UnsupportedCompressionError.
    """
    section = bytes(memoryview(batch)[HEADER_LEN:])
    data = section if h.compression == 0 else decompress(h.compression, section)
    return decode_section(data, h, min_offset, max_records)


def decode_section(
    data: bytes, h: BatchHeader, min_offset: int = 0, max_records: int = -1, strict: bool = False
) -> list[Record]:
    """Records of a batch's (decompressed) records section with offset >= ``min_offset``.
    ``strict`` (validating a batch before it is appended) also requires offset deltas equal
    to each record's index and nothing after the last record. Raises ValueError."""
    out: list[Record] = []
    pos = 0
    lat = h.is_log_append_time
    for i in range(h.records_count):
        if len(out) == max_records:
            break
        try:
            length, pos = get_varint(data, pos)
            if length < 0:
                raise ValueError("negative length")
            end = pos + length
            if end > len(data):
                raise ValueError("truncated")
            # Fields are bounded by ``end`` rather than by a copy of the record (no slicing:
            # decoding stays linear in the batch size); a varint overrunning ``end`` fails below.
            pos += 1
            ts_delta, pos = get_varlong(data, pos)
            offset_delta, pos = get_varint(data, pos)
            key, pos = _read_bytes(data, pos, end)
            value, pos = _read_bytes(data, pos, end)
            count, pos = get_varint(data, pos)
            if count < 0:
                raise ValueError("bad header count")
            headers = []
            for _ in range(count):
                hk, pos = _read_bytes(data, pos, end)
                if hk is None:
                    raise ValueError("header key is null or not UTF-8")
                hv, pos = _read_bytes(data, pos, end)
                try:
                    headers.append((hk.decode(), hv))
                except UnicodeDecodeError:
                    raise ValueError("header key is null or not UTF-8") from None
            if pos != end:
                raise ValueError("length does not match its fields")
            if strict and offset_delta != i:
                raise ValueError(f"offset delta {offset_delta}, expected {i}")
        except ValueError as e:
            raise ValueError(f"record {i} of the batch: {e}") from None
        offset = h.base_offset + offset_delta
        if offset < min_offset:
            continue
        ts = h.max_timestamp if lat else h.base_timestamp + ts_delta
        out.append(Record(offset, ts, key, value, tuple(headers)))
    if strict and len(out) == h.records_count and pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes after the last of its {h.records_count} records")
    return out


def iter_batches(buf: bytes | bytearray | memoryview) -> Iterable[tuple[BatchHeader, memoryview]]:
    """Walks concatenated batches; raises CorruptRecordError on a bad or partial one."""
    view = memoryview(buf)
    pos = index = 0
    while pos < len(view):
        try:
            h = parse_header(view, pos)
        except Incomplete:
            raise CorruptRecordError(
                f"truncated batch {index} at byte {pos}",
                reason="truncated batch",
                batch_index=index,
                position=pos,
            ) from None
        except ValueError as e:
            raise CorruptRecordError(
                f"corrupt batch {index} at byte {pos}: {e}",
                reason=str(e),
                batch_index=index,
                position=pos,
            ) from None
        yield h, view[pos : pos + h.size]
        pos += h.size
        index += 1


def complete_batches(buf: bytes | bytearray | memoryview) -> memoryview:
    """The whole batches of a fetch response's records: a partial last batch (which a broker
    may send, as Kafka does, when max_bytes cuts it) is dropped."""
    view = memoryview(buf)
    pos = 0
    while pos < len(view):
        try:
            h = parse_header(view, pos)
        except Incomplete:
            break
        pos += h.size
    return view[:pos]


def decode_batches(buf: bytes | bytearray | memoryview, min_offset: int = 0) -> list[Record]:
    """Every record of concatenated batches (e.g. a fetch response), CRC-checked."""
    out: list[Record] = []
    for h, batch in iter_batches(buf):
        problem = check_batch(batch, h)
        if problem:
            raise CorruptRecordError(
                f"corrupt batch at byte {h.position}: {problem}", reason=problem, position=h.position
            )
        try:
            out += decode_records(batch, h, min_offset)
        except ValueError as e:
            raise CorruptRecordError(str(e), reason=str(e), position=h.position) from None
    return out
