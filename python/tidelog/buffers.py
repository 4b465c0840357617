"""Byte ranges shared by the wire protocol and the storage engines, so that neither imports
the other: a frame's records kept in place, and a memoryview of any of them."""

from __future__ import annotations

from typing import Any


class RecordsSlice:
    """The records of a message read from a ``bytes`` frame, kept as (frame, start, end) so
    the storage core can validate and write them in place: never copied in Python."""

    __slots__ = ("data", "end", "start")

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self.data, self.start, self.end = data, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def view(self) -> memoryview:
        return memoryview(self.data)[self.start : self.end]

    def __bytes__(self) -> bytes:
        return self.data[self.start : self.end]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (bytes, bytearray, memoryview, RecordsSlice)):
            return bytes(self) == bytes(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"RecordsSlice({len(self)} bytes)"


def as_view(data: Any) -> memoryview:
    """A memoryview of bytes-like data or of a RecordsSlice."""
    return data.view() if isinstance(data, RecordsSlice) else memoryview(data)
