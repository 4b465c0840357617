"""Memory-mapped sparse offset index and time index: the pure-Python twin of
``rust/src/index.rs`` (same files, big-endian entries)."""

from __future__ import annotations

import mmap
import os
import struct

from tidelog.storage.fileio import allocate, storage_error

OFFSET_ENTRY = 8
TIME_ENTRY = 12
_OFF = struct.Struct(">II")
_TIME = struct.Struct(">qI")


class _MappedEntries:
    """A file of fixed-size entries mapped into memory."""

    def __init__(self, path: str, entry_size: int, preallocate: int | None) -> None:
        self.path = path
        self.entry_size = entry_size
        # Open while the index can change size (the active segment's); closed once trimmed,
        # so an inactive segment's indexes cost no descriptor (the map stays valid).
        self.fd: int | None = None
        try:
            length = os.fstat(self._fd()).st_size
        except OSError as e:
            raise storage_error("open index", path, e) from e
        self.entries = length // entry_size
        self.capacity = self.entries
        self.map: mmap.mmap | bytes | None = None
        if preallocate is not None:
            self.resize(max(preallocate, length - length % entry_size))
        else:
            self.resize(self.entries * entry_size)
            self._detach()

    def _fd(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self.fd

    def _close_fd(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _detach(self) -> None:
        """For an index that no longer changes: its entries are kept as bytes and the file is
        closed (CPython's mmap would hold a descriptor of its own)."""
        if isinstance(self.map, mmap.mmap):
            data = bytes(self.map)
            self.map.close()
            self.map = data
        self._close_fd()

    def _unmap(self) -> None:
        if isinstance(self.map, mmap.mmap):
            self.map.close()
        self.map = None

    def resize(self, nbytes: int) -> None:
        nbytes -= nbytes % self.entry_size
        self._unmap()
        try:
            fd = self._fd()
            length = os.fstat(fd).st_size
            if nbytes > length:
                allocate(fd, length, nbytes - length)
            else:
                os.ftruncate(fd, nbytes)
        except OSError as e:
            raise storage_error("resize index", self.path, e) from e
        self.capacity = nbytes // self.entry_size
        self.entries = min(self.entries, self.capacity)
        if nbytes > 0:
            self.map = mmap.mmap(fd, nbytes)

    def is_full(self) -> bool:
        return self.entries >= self.capacity

    def floor(self, target: int, unpack: struct.Struct, field: int = 0) -> int | None:
        """Greatest entry index whose ``field`` is <= target."""
        lo, hi = 0, self.entries
        m = self.map
        size = self.entry_size
        while lo < hi:
            mid = (lo + hi) // 2
            if unpack.unpack_from(m, mid * size)[field] <= target:  # type: ignore[arg-type]
                lo = mid + 1
            else:
                hi = mid
        return lo - 1 if lo > 0 else None

    def push(self, entry: bytes) -> None:
        at = self.entries * self.entry_size
        assert isinstance(self.map, mmap.mmap), "push into an inactive index"
        self.map[at : at + self.entry_size] = entry
        self.entries += 1

    def flush(self) -> None:
        if isinstance(self.map, mmap.mmap):
            try:
                self.map.flush()
            except OSError as e:
                raise storage_error("msync index", self.path, e) from e

    def trim(self) -> None:
        self.flush()
        self.resize(self.entries * self.entry_size)
        try:
            os.fsync(self._fd())
        except OSError as e:
            raise storage_error("fsync index", self.path, e) from e
        self._detach()

    def close(self) -> None:
        self._unmap()
        self._close_fd()


class _Index:
    """What both indexes share: a mapped file of entries and its life cycle."""

    ENTRY = 0

    def __init__(self, path: str, base_offset: int, preallocate: int | None) -> None:
        self._m = _MappedEntries(path, self.ENTRY, preallocate)
        self.base_offset = base_offset

    @property
    def path(self) -> str:
        return self._m.path

    @property
    def entries(self) -> int:
        return self._m.entries

    def set_entries(self, n: int) -> None:
        self._m.entries = min(n, self._m.capacity)

    def is_full(self) -> bool:
        return self._m.is_full()

    def flush(self) -> None:
        self._m.flush()

    def trim(self) -> None:
        self._m.trim()

    def preallocate(self, nbytes: int) -> None:
        self._m.resize(max(nbytes, self.entries * self.ENTRY))

    def close(self) -> None:
        self._m.close()


class OffsetIndex(_Index):
    """Entries (relative last offset of a batch, position of the batch's start)."""

    ENTRY = OFFSET_ENTRY

    def get(self, i: int) -> tuple[int, int]:
        rel, pos = _OFF.unpack_from(self._m.map, i * OFFSET_ENTRY)  # type: ignore[arg-type]
        return self.base_offset + rel, pos

    def append(self, offset: int, position: int) -> None:
        self._m.push(_OFF.pack(offset - self.base_offset, position))

    def lookup(self, target: int) -> tuple[int, int]:
        """The greatest entry with offset <= target, or (base offset, 0)."""
        i = self._m.floor(target - self.base_offset, _OFF)
        return self.get(i) if i is not None else (self.base_offset, 0)

    def floor_position(self, position: int) -> int:
        """The greatest entry position <= ``position`` (0 if none): a batch start."""
        i = self._m.floor(position, _OFF, 1)
        return self.get(i)[1] if i is not None else 0

    def truncate_to(self, offset: int) -> None:
        """Removes entries with offset >= ``offset``."""
        i = self._m.floor(offset - self.base_offset - 1, _OFF)
        keep = 0 if i is None else i + 1
        self._m.entries = min(keep, self._m.entries)

    def sanity_check(self, log_size: int) -> bool:
        prev: tuple[int, int] | None = None
        for i in range(self.entries):
            o, p = self.get(i)
            if p >= max(log_size, 1) or (prev is not None and (o <= prev[0] or p <= prev[1])):
                return False
            prev = (o, p)
        return True


class TimeIndex(_Index):
    """Entries (max timestamp so far, relative offset of the batch holding it)."""

    ENTRY = TIME_ENTRY

    def get(self, i: int) -> tuple[int, int]:
        ts, rel = _TIME.unpack_from(self._m.map, i * TIME_ENTRY)  # type: ignore[arg-type]
        return ts, self.base_offset + rel

    def last_entry(self) -> tuple[int, int] | None:
        return self.get(self.entries - 1) if self.entries else None

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Appends when there is room and the timestamp exceeds the last entry's, an empty
        index counting as -1: as Kafka, a segment without timestamps gets no entry."""
        last = self.last_entry()
        if self.is_full() or timestamp <= (last[0] if last is not None else -1):
            return
        self._m.push(_TIME.pack(timestamp, offset - self.base_offset))

    def lookup(self, timestamp: int) -> tuple[int, int]:
        """The greatest entry with timestamp <= target, or (-1, base offset)."""
        i = self._m.floor(timestamp, _TIME)
        return self.get(i) if i is not None else (-1, self.base_offset)

    def truncate_to(self, offset: int) -> None:
        keep = self.entries
        while keep > 0 and self.get(keep - 1)[1] >= offset:
            keep -= 1
        self._m.entries = keep

    def sanity_check(self, next_offset: int) -> bool:
        prev: tuple[int, int] | None = None
        for i in range(self.entries):
            ts, o = self.get(i)
            bad_order = prev is not None and (ts <= prev[0] or o < prev[1])
            if o >= max(next_offset, self.base_offset + 1) or bad_order:
                return False
            prev = (ts, o)
        return True
