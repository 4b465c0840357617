"""Kafka wire primitives: fixed-width big-endian integers, (unsigned) varints, classic and
compact strings, bytes and arrays, and tagged-field sections."""

from __future__ import annotations

import struct
import uuid
from typing import Any

INT8 = struct.Struct(">b")
INT16 = struct.Struct(">h")
INT32 = struct.Struct(">i")
INT64 = struct.Struct(">q")
UINT16 = struct.Struct(">H")
UINT32 = struct.Struct(">I")
FLOAT64 = struct.Struct(">d")
FIXED: dict[str, struct.Struct] = {
    "int8": INT8,
    "int16": INT16,
    "int32": INT32,
    "int64": INT64,
    "uint16": UINT16,
    "uint32": UINT32,
    "float64": FLOAT64,
}


class DecodeError(ValueError):
    """A message that cannot be parsed; ``position`` is the byte where parsing failed."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at byte {position}")
        self.position = position


class Reader:
    """Reads primitives from a buffer without copying (slices are memoryviews)."""

    __slots__ = ("buf", "pos", "source")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self.buf = memoryview(buf)
        self.pos = pos
        #: The frame itself when it is a ``bytes`` object (records then become RecordsSlices).
        self.source = buf if isinstance(buf, bytes) else None

    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise DecodeError(f"needs {n} bytes, {self.remaining()} left", self.pos)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def fixed(self, s: struct.Struct) -> Any:
        if self.pos + s.size > len(self.buf):
            raise DecodeError(f"needs {s.size} bytes, {self.remaining()} left", self.pos)
        (v,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return v

    def uvarint(self) -> int:
        v = shift = 0
        buf, pos = self.buf, self.pos
        while True:
            if pos >= len(buf):
                raise DecodeError("truncated varint", pos)
            b = buf[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                self.pos = pos
                return v
            shift += 7
            if shift > 63:
                raise DecodeError("varint too long", pos)

    def varint(self) -> int:
        u = self.uvarint()
        return (u >> 1) ^ -(u & 1)

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=bytes(self.take(16)))

    def length(self, compact: bool, wide: bool) -> int:
        """A length prefix; -1 means null. Compact: uvarint n+1; classic: int16 or int32."""
        if compact:
            return self.uvarint() - 1
        return self.fixed(INT32 if wide else INT16)  # type: ignore[no-any-return]


class Writer:
    """Accumulates an encoding; ``parts`` receives zero-copy pieces (e.g. file slices) that
    must be sent in place, between the bytes written before and after them."""

    __slots__ = ("buf", "parts")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.parts: list[Any] = []

    def fixed(self, s: struct.Struct, v: Any) -> None:
        self.buf += s.pack(v)

    def uvarint(self, v: int) -> None:
        buf = self.buf
        while v >= 0x80:
            buf.append((v & 0x7F) | 0x80)
            v >>= 7
        buf.append(v)

    def varint(self, v: int) -> None:
        self.uvarint((v << 1) ^ (v >> 63))

    def length(self, n: int, compact: bool, wide: bool) -> None:
        if compact:
            self.uvarint(n + 1)
        else:
            self.buf += (INT32 if wide else INT16).pack(n)

    def splice(self, piece: Any) -> None:
        """Inserts a piece that is sent as is (it has ``length`` and is not copied here)."""
        self.parts.append(bytes(self.buf))
        self.parts.append(piece)
        self.buf = bytearray()

    def chunks(self) -> list[Any]:
        """Everything written, in order: bytes and spliced pieces."""
        return [*self.parts, bytes(self.buf)] if self.parts else [bytes(self.buf)]

    def size(self) -> int:
        return len(self.buf) + sum(
            len(p) if isinstance(p, (bytes, bytearray)) else p.length for p in self.parts
        )
