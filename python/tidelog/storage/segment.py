"""One segment: ``.log`` + ``.index`` + ``.timeindex``: the pure-Python twin of
``rust/src/segment.rs``."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import weakref
from collections.abc import Iterator

from tidelog.errors import CorruptRecordError
from tidelog.records import (
    HEADER_LEN,
    LOG_OVERHEAD,
    BatchHeader,
    Incomplete,
    check_batch,
    decode_records,
    parse_header,
)
from tidelog.storage.fileio import datasync, pread, pwrite, storage_error
from tidelog.storage.index import OffsetIndex, TimeIndex

SCAN_CHUNK = 64 * 1024
HEADER_SCAN_CHUNK = 8 * 1024
_I32 = struct.Struct(">i")


def file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


def corrupt_segment(path: str, position: int, reason: str) -> CorruptRecordError:
    return CorruptRecordError(
        f"corrupt record batch at byte {position} of {path}: {reason}",
        reason=reason,
        segment=path,
        position=position,
    )


def pread_exact(fd: int, path: str, pos: int, n: int) -> bytes:
    """Up to ``n`` bytes at ``pos`` (fewer only at end of file)."""
    try:
        data = pread(fd, n, pos)
        while len(data) < n:
            more = pread(fd, n - len(data), pos + len(data))
            if not more:
                break
            data += more
        return data
    except OSError as e:
        raise storage_error("read", path, e) from e


# What one scan step found: a batch (header, bytes), the end, a torn tail, an invalid batch.
Scanned = tuple[str, BatchHeader | None, memoryview | None, int, str]


class BatchScan:
    """Walks the batches of a file range with buffered positional reads. A header-only scan
    reads just enough to see each batch's header and yields no bodies."""

    def __init__(
        self, fd: int, path: str, start: int, end: int, header_only: bool = False, owned: bool = False
    ) -> None:
        self.fd, self.path, self.pos, self.end = fd, path, start, end
        self.buf = b""
        self.buf_pos = start
        self.header_only = header_only
        if owned:  # a descriptor opened for this scan alone
            weakref.finalize(self, os.close, fd)

    def next(self) -> Scanned:
        if self.pos >= self.end:
            return ("end", None, None, self.pos, "")
        while True:
            off = self.pos - self.buf_pos
            in_buf = off <= len(self.buf)
            if in_buf:
                try:
                    h = parse_header(self.buf, min(off, len(self.buf)), self.buf_pos, self.header_only)
                    if self.pos + h.size > self.end:
                        return ("torn", None, None, self.pos, "")
                    self.pos += h.size
                    body = None if self.header_only else memoryview(self.buf)[off : off + h.size]
                    return ("batch", h, body, h.position, "")
                except ValueError as e:
                    return ("invalid", None, None, self.pos, str(e))
                except Incomplete:
                    pass
            avail = len(self.buf) - off if in_buf else 0
            if avail >= LOG_OVERHEAD and not self.header_only:
                need = _I32.unpack_from(self.buf, off + 8)[0] + LOG_OVERHEAD
            else:
                need = HEADER_LEN
            if self.pos + need > self.end:
                return ("torn", None, None, self.pos, "")
            chunk = HEADER_SCAN_CHUNK if self.header_only else SCAN_CHUNK
            want = min(max(need, chunk), self.end - self.pos)
            self.buf = pread_exact(self.fd, self.path, self.pos, want)
            self.buf_pos = self.pos
            if len(self.buf) < want:
                self.end = self.pos + len(self.buf)

    def batches(self) -> Iterator[Scanned]:
        while True:
            s = self.next()
            yield s
            if s[0] != "batch":
                return


class FileSlice:
    """A byte range of a segment file, held open (by a duplicated descriptor) for sending."""

    def __init__(self, fd: int, path: str, position: int, length: int) -> None:
        self._fd = os.dup(fd)
        self._finalizer = weakref.finalize(self, os.close, self._fd)
        self.path = path
        self.position = position
        self.length = length

    def send(self, fd: int, sent: int) -> int:
        """sendfile(2) of bytes ``sent..length`` to socket ``fd``; returns how many went out.
        Where sendfile is missing (Windows) this raises OSError: read() and send the bytes."""
        if not hasattr(os, "sendfile"):
            raise OSError(errno.ENOSYS, "sendfile is not available on this platform")
        return os.sendfile(fd, self._fd, self.position + sent, self.length - sent)

    def read(self) -> bytes:
        return pread_exact(self._fd, self.path, self.position, self.length)

    def read_batches(self) -> tuple[bytes, list[BatchHeader]]:
        """The range's valid leading batches (whole, CRC-checked) and their bytes. A damaged
        batch after valid ones ends the run; an error only when the first batch is damaged."""
        buf = self.read()
        headers: list[BatchHeader] = []
        pos = 0
        while pos < len(buf):
            at = self.position + pos
            try:
                h = parse_header(buf, pos)
                problem = check_batch(memoryview(buf)[pos : pos + h.size], h)
            except Incomplete:
                problem = "batch runs past the end of the read"
            except ValueError as e:
                problem = str(e)
            if problem:
                if headers:
                    break
                raise corrupt_segment(self.path, at, problem)
            headers.append(h)
            pos += h.size
        if not headers and len(buf) < self.length:
            raise corrupt_segment(self.path, self.position + len(buf), "segment shrank while reading")
        return (buf if pos == len(buf) else buf[:pos]), headers


class Segment:
    """One segment. Not thread-safe on its own; the owning log serialises access."""

    def __init__(
        self,
        directory: str,
        base_offset: int,
        index_interval_bytes: int,
        preallocate: int | None,
        now_ms: int,
    ) -> None:
        self.base_offset = base_offset
        self.log_path = os.path.join(directory, file_name(base_offset, ".log"))
        index_path = os.path.join(directory, file_name(base_offset, ".index"))
        time_path = os.path.join(directory, file_name(base_offset, ".timeindex"))
        self.indexes_suspect = not (os.path.exists(index_path) and os.path.exists(time_path))
        # Held open while the segment is active (or being recovered); an inactive segment
        # holds no descriptor and opens its file read-only for each use, so the descriptors
        # a partition needs do not grow with its segments.
        self.fd: int | None = None
        self.size = os.fstat(self._writable()).st_size
        self.offset_index = OffsetIndex(index_path, base_offset, preallocate)
        self.time_index = TimeIndex(time_path, base_offset, preallocate)
        self.index_interval_bytes = index_interval_bytes
        self.bytes_since_last_index_entry = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.offset_of_max_timestamp = base_offset
        self.created_ms = now_ms

    def _writable(self) -> int:
        """The descriptor for changing the file, opened read-write again if released."""
        if self.fd is None:
            try:
                self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise storage_error("open segment", self.log_path, e) from e
        return self.fd

    @contextlib.contextmanager
    def _reading(self) -> Iterator[int]:
        """A descriptor to read with: the one held, or one opened for this use."""
        if self.fd is not None:
            yield self.fd
            return
        fd = self._open_read_only()
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_read_only(self) -> int:
        try:
            return os.open(self.log_path, os.O_RDONLY)
        except OSError as e:
            raise storage_error("open segment", self.log_path, e) from e

    def release_file(self) -> None:
        """Closes the held descriptor of an inactive segment (its data is durable by now)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _scan(self, start: int, header_only: bool = False) -> BatchScan:
        if self.fd is not None:
            return BatchScan(self.fd, self.log_path, start, self.size, header_only)
        return BatchScan(self._open_read_only(), self.log_path, start, self.size, header_only, owned=True)

    def _scan_error(self, kind: str, pos: int, reason: str) -> CorruptRecordError:
        """The error for a scan that stopped on a torn ("torn") or invalid batch."""
        if kind == "torn":
            return corrupt_segment(self.log_path, pos, "batch runs past the end of the segment")
        return corrupt_segment(self.log_path, pos, reason)

    def load(self) -> bool:
        """Trusts a cleanly closed segment's indexes if sane; False if they must be rebuilt."""
        if not self.offset_index.sanity_check(self.size):
            return False
        self.max_timestamp = -1
        last = self.time_index.last_entry()
        if last is not None:
            self.max_timestamp, self.offset_of_max_timestamp = last
        n = self.offset_index.entries
        start = self.offset_index.get(n - 1)[1] if n else 0
        self.next_offset = self.base_offset
        self.bytes_since_last_index_entry = 0
        first = True
        for kind, h, _, _, _ in self._scan(start, header_only=True).batches():
            if kind == "end":
                break
            if kind != "batch" or h is None:
                return False
            if first and start > 0 and h.last_offset != self.offset_index.get(n - 1)[0]:
                return False
            first = False
            self.next_offset = h.next_offset
            if h.max_timestamp > self.max_timestamp:
                self.max_timestamp = h.max_timestamp
                self.offset_of_max_timestamp = h.last_offset
        return self.time_index.sanity_check(self.next_offset)

    def recover(self) -> tuple[int, int, int, int, str] | None:
        """Rebuilds the indexes, truncating at the first invalid or partial batch; says what
        was cut as (segment, position, next offset, bytes, reason). No size limit applies:
        ``max.message.bytes`` governs new produce requests, never what is already stored."""
        self.offset_index.set_entries(0)
        self.time_index.set_entries(0)
        self.bytes_since_last_index_entry = 0
        self.max_timestamp = -1
        self.offset_of_max_timestamp = self.base_offset
        self.next_offset = self.base_offset
        valid_end = 0
        expected: int | None = None
        reason = None
        for kind, h, data, _, why in self._scan(0).batches():
            if kind == "end":
                break
            if kind != "batch" or h is None or data is None:
                reason = "batch runs past the end of the segment" if kind == "torn" else why
                break
            reason = check_batch(data, h)
            if reason is not None:
                break
            in_order = (
                h.base_offset == expected if expected is not None else h.base_offset >= self.base_offset
            )
            if not in_order or h.last_offset - self.base_offset > 0xFFFFFFFF:
                reason = f"batch at offset {h.base_offset} is out of order in the segment"
                break
            expected = h.next_offset
            valid_end = h.position + h.size
            self._index_batches([h], 0)
        truncated = self.size - valid_end
        if truncated == 0:
            return None
        try:
            os.ftruncate(self._writable(), valid_end)
        except OSError as e:
            raise storage_error("truncate segment", self.log_path, e) from e
        self.size = valid_end
        return (
            self.base_offset,
            valid_end,
            self.next_offset,
            truncated,
            reason or "the file is shorter than its batches",
        )

    def _index_batches(self, headers: list[BatchHeader], file_base: int) -> None:
        for h in headers:
            if h.max_timestamp > self.max_timestamp:
                self.max_timestamp = h.max_timestamp
                self.offset_of_max_timestamp = h.last_offset
            # A full index gets no more entries (reads scan further); the segment rolls on it.
            if (
                self.bytes_since_last_index_entry > self.index_interval_bytes
                and not self.offset_index.is_full()
            ):
                self.offset_index.append(h.last_offset, file_base + h.position)
                self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
                self.bytes_since_last_index_entry = 0
            self.bytes_since_last_index_entry += h.size
            self.next_offset = h.next_offset

    def should_roll(
        self, nbytes: int, last_offset: int, segment_bytes: int, segment_ms: int, now_ms: int
    ) -> bool:
        if self.size == 0:
            return False
        return (
            self.size + nbytes > segment_bytes
            or now_ms - self.created_ms > segment_ms
            or self.offset_index.is_full()
            or self.time_index.is_full()
            or last_offset - self.base_offset > 0x7FFFFFFF
        )

    def append(self, buf: bytes | bytearray, headers: list[BatchHeader]) -> None:
        """Writes validated batches at the end in one write; on failure cuts the file back."""
        at = self.size
        fd = self._writable()
        try:
            view = memoryview(buf)
            done = 0
            while done < len(view):
                done += pwrite(fd, view[done:], at + done)
        except OSError as e:
            err = storage_error("append to segment", self.log_path, e)
            try:
                os.ftruncate(fd, at)
            except OSError as e2:
                from tidelog.errors import LogClosedError

                raise LogClosedError(f"{err}; cutting the partial write back also failed: {e2}") from e
            raise err from e
        self.size += len(buf)
        self._index_batches(headers, at)

    def find_batch(self, target: int) -> BatchHeader | None:
        """The first batch whose last offset is >= target, or None."""
        _, start = self.offset_index.lookup(target)
        for kind, h, _, pos, reason in self._scan(start, header_only=True).batches():
            if kind == "batch" and h is not None:
                if h.last_offset >= target:
                    return h
            elif kind == "end":
                return None
            else:
                raise self._scan_error(kind, pos, reason)
        return None

    def whole_batches_len(self, position: int, max_bytes: int) -> int:
        """Length of the whole batches a read of ``max_bytes`` from ``position`` returns: the
        rest of the segment if it fits; else up to the last index entry within max_bytes; else
        what a scan finds within max_bytes; always at least the first batch."""
        remaining = self.size - position
        if remaining <= max_bytes:
            return remaining
        limit = position + max_bytes
        boundary = self.offset_index.floor_position(limit)
        if boundary > position:
            return boundary - position
        end = position
        for kind, h, _, pos, reason in self._scan(position, header_only=True).batches():
            if kind == "batch" and h is not None:
                nxt = h.position + h.size
                if nxt > limit and end > position:
                    break
                end = nxt
            elif kind == "end":
                break
            else:
                raise self._scan_error(kind, pos, reason)
        return end - position

    def batch_range(self, position: int, max_bytes: int) -> FileSlice:
        length = self.whole_batches_len(position, max_bytes)
        with self._reading() as fd:
            return FileSlice(fd, self.log_path, position, length)

    def slice(self, position: int, max_bytes: int, end: int | None = None) -> FileSlice:
        """Whole batches from ``position`` up to ``max_bytes`` (at least one batch), ending
        at or before ``end`` (a batch boundary) when given."""
        with self._reading() as fd:
            head = pread_exact(fd, self.log_path, position, LOG_OVERHEAD)
            if len(head) < LOG_OVERHEAD:
                raise corrupt_segment(self.log_path, position, "batch header past the end of the segment")
            first = _I32.unpack_from(head, 8)[0] + LOG_OVERHEAD
            length = min(max(max_bytes, first), min(self.size if end is None else end, self.size) - position)
            return FileSlice(fd, self.log_path, position, length)

    def offset_for_time(self, timestamp: int, min_offset: int) -> tuple[int, int] | None:
        if self.max_timestamp < timestamp:
            return None
        _, from_offset = self.time_index.lookup(timestamp)
        first = self.find_batch(max(from_offset, min_offset))
        if first is None:
            return None
        for kind, h, data, pos, reason in self._scan(first.position).batches():
            if kind == "batch" and h is not None and data is not None:
                if h.max_timestamp < timestamp:
                    continue
                problem = check_batch(data, h)
                if problem:
                    raise corrupt_segment(self.log_path, h.position, problem)
                try:
                    records = decode_records(data, h, min_offset)
                except ValueError as e:
                    raise corrupt_segment(self.log_path, h.position, str(e)) from None
                for r in records:
                    if r.timestamp >= timestamp:
                        return r.offset, r.timestamp
            elif kind == "end":
                return None
            else:
                raise self._scan_error(kind, pos, reason)
        return None

    def truncate_to(self, offset: int) -> int:
        h = self.find_batch(offset)
        if h is None:
            return 0
        cut = h.position
        self.offset_index.truncate_to(h.base_offset)
        self.time_index.truncate_to(h.base_offset)
        try:
            os.ftruncate(self._writable(), cut)
        except OSError as e:
            raise storage_error("truncate segment", self.log_path, e) from e
        removed = self.size - cut
        self.size = cut
        if not self.load():
            self.recover()
        return removed

    def seal_time_index(self) -> None:
        self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)

    def make_inactive(self) -> None:
        self.seal_time_index()
        self.flush()
        self.offset_index.trim()
        self.time_index.trim()
        self.release_file()

    def make_active(self, index_bytes: int) -> None:
        self._writable()
        self.offset_index.preallocate(index_bytes)
        self.time_index.preallocate(index_bytes)

    def flush(self) -> None:
        """fsyncs the log data; indexes become durable in make_inactive (recovery rebuilds an
        active segment's indexes)."""
        if self.fd is None:
            return  # released only once durable
        try:
            datasync(self.fd)
        except OSError as e:
            raise storage_error("fsync segment", self.log_path, e) from e

    def close(self) -> None:
        self.offset_index.close()
        self.time_index.close()
        self.release_file()

    def delete(self) -> None:
        """Deletes the files, the log first (a crash leaves at most orphan indexes)."""
        paths = [self.log_path, self.offset_index.path, self.time_index.path]
        self.close()
        for p in paths:
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise storage_error("delete segment file", p, e) from e
