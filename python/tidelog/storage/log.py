"""One partition's log: the pure-Python twin of ``rust/src/log.rs``. Same files, same
recovery, same errors; standard library only (plus ``tidelog.records``)."""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from tidelog.errors import (
    LogClosedError,
    LogLockedError,
    OffsetOutOfRangeError,
    RecordTooLargeError,
    TidelogError,
    UnsupportedCompressionError,
)
from tidelog.records import BatchHeader, Record, build_batch, decode_records, parse_header
from tidelog.storage.batch import assign_offsets, validate_batches
from tidelog.storage.config import LogConfig
from tidelog.storage.fileio import datasync, storage_error, sync_dir, try_lock, write_file_atomic
from tidelog.storage.segment import FileSlice, Segment, corrupt_segment, file_name

CHECKPOINT_FILE = "partition.checkpoint"
LOCK_FILE = ".lock"
_CHECKPOINT_HEADER = "tidelog-partition-checkpoint 1"
T = TypeVar("T")

DEFAULTS: dict[str, Any] = LogConfig().core_settings()  # one place for the defaults


def _read_checkpoint(directory: str) -> tuple[int, int, bool] | None:
    try:
        with open(os.path.join(directory, CHECKPOINT_FILE), encoding="ascii") as f:
            lines = f.read().splitlines()
        if len(lines) < 4 or lines[0] != _CHECKPOINT_HEADER:
            return None
        vals = []
        for line, name in zip(
            lines[1:4], ("log_start_offset", "recovery_point", "clean_shutdown"), strict=True
        ):
            key, _, v = line.partition(" ")
            if key != name:
                return None
            vals.append(int(v))
        return vals[0], vals[1], vals[2] == 1
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _settings(config: dict[str, Any]) -> dict[str, Any]:
    cfg = dict(DEFAULTS)
    for k, v in config.items():
        if k not in DEFAULTS:
            raise ValueError(f"unknown log config field {k!r}")
        cfg[k] = v
    return cfg


class Log:
    """The pure-Python engine's partition log; the same interface as ``tidelog._core.Log``.

    Thread-safe: a lock serialises every operation.
    """

    def __init__(self, path: str, config: dict[str, Any], now_ms: int) -> None:
        self._cfg = _settings(config)
        self._mutex = threading.RLock()
        self._dir = os.fspath(path)
        try:
            os.makedirs(self._dir, exist_ok=True)
            self._lock_fd = os.open(os.path.join(self._dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise storage_error("create directory", self._dir, e) from e
        if not try_lock(self._lock_fd):
            os.close(self._lock_fd)
            raise LogLockedError(f"{self._dir} is locked by another process", path=self._dir)
        try:
            self._open(now_ms)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, now_ms: int) -> None:
        cfg, directory = self._cfg, self._dir
        cp = _read_checkpoint(directory)
        clean = cp is not None and cp[2]
        self._clean = clean
        self._truncations: list[tuple[int, int, int, int, str]] = []
        self._raised_to: int | None = None
        self._recovered = 0
        bases = self._list_segments()
        log_start = max(cp[0] if cp else 0, 0)
        recovery_point = (1 << 63) if clean else (cp[1] if cp else -(1 << 63))
        segments: list[Segment] = []
        last = len(bases) - 1
        for i, base in enumerate(bases):
            prealloc = cfg["segment_index_bytes"] if i == last else None
            seg = Segment(directory, base, cfg["index_interval_bytes"], prealloc, now_ms)
            next_base = bases[i + 1] if i < last else (1 << 63)
            # Segments holding offsets at or after the recovery point may hold unflushed data.
            if next_base > recovery_point or seg.indexes_suspect or not seg.load():
                self._recovered += 1
                if i != last:
                    seg.make_active(cfg["segment_index_bytes"])  # rebuilt indexes need room
                cut = seg.recover()
                if cut is not None:
                    self._truncations.append(cut)
                if i != last:
                    seg.make_inactive()
            if i != last:
                seg.release_file()
            # A damaged segment loses only its own invalid tail: later segments are kept.
            segments.append(seg)
        if not segments:
            segments.append(
                Segment(directory, log_start, cfg["index_interval_bytes"], cfg["segment_index_bytes"], now_ms)
            )
            sync_dir(directory)
        self._segments = segments
        self._start = max(log_start, segments[0].base_offset)
        self._unflushed = 0
        self._last_flush_ms = now_ms
        self._closed: str | None = None
        # Offsets below the checkpointed recovery point were on disk and may have been handed
        # to clients: if damage took the log end below it, the log resumes there instead.
        durable_end = cp[1] if cp else 0
        if self.end_offset < durable_end:
            if self._segments[-1].size > 0:
                self._segments[-1].make_inactive()
            else:
                self._segments.pop().delete()
            self._push_active_segment(durable_end, now_ms)
            self._raised_to = durable_end
        self._start = min(self._start, self.end_offset)
        if self._recovered > 0:
            self._segments[-1].flush()
        self._recovery_point = self.end_offset
        self._delete_segments_below_start()
        self._write_checkpoint(False)

    def _list_segments(self) -> list[int]:
        bases = []
        orphans = []
        for name in os.listdir(self._dir):
            stem, dot, ext = name.partition(".")
            if not dot:
                continue
            if len(stem) != 20 or not stem.isdigit() or not stem.isascii():
                if name.endswith(".tmp"):
                    orphans.append(name)
                continue
            base = int(stem)
            if ext == "log":
                bases.append(base)
            elif ext in ("index", "timeindex") and not os.path.exists(
                os.path.join(self._dir, file_name(base, ".log"))
            ):
                orphans.append(name)
        for name in orphans:
            os.remove(os.path.join(self._dir, name))
        return sorted(bases)

    def _write_checkpoint(self, clean: bool) -> None:
        text = (
            f"{_CHECKPOINT_HEADER}\nlog_start_offset {self._start}\n"
            f"recovery_point {self._recovery_point}\nclean_shutdown {int(clean)}\n"
        )
        write_file_atomic(self._dir, CHECKPOINT_FILE, text.encode("ascii"))

    def _locked(self, f: Callable[[], T]) -> T:
        with self._mutex:
            if self._closed is not None:
                raise LogClosedError(f"log is closed: {self._closed}")
            return f()

    def _fail_on_closed(self, e: TidelogError) -> None:
        if isinstance(e, LogClosedError):
            self._closed = str(e)

    # ---- properties ----

    @property
    def start_offset(self) -> int:
        return self._start

    @property
    def end_offset(self) -> int:
        return self._segments[-1].next_offset

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    @property
    def active_segment_bytes(self) -> int:
        return self._segments[-1].size

    @property
    def max_timestamp(self) -> int:
        return max(s.max_timestamp for s in self._segments)

    def segments(self) -> list[int]:
        return [s.base_offset for s in self._segments]

    def recovery_report(
        self,
    ) -> tuple[bool, int, int, list[tuple[int, int, int, int, str]], int | None]:
        total = sum(t[3] for t in self._truncations)
        return (self._clean, self._recovered, total, list(self._truncations), self._raised_to)

    # ---- appends ----

    def append_records(
        self, records: Iterable[Any], leader_epoch: int, now_ms: int
    ) -> tuple[int, int, int, int, int]:
        buf = bytearray(build_batch(records, now_ms=now_ms))
        h = parse_header(buf, 0)

        def go() -> tuple[int, int, int, int, int]:
            if h.size > self._cfg["max_message_bytes"]:
                mx = self._cfg["max_message_bytes"]
                raise RecordTooLargeError(
                    f"record batch of {h.size} bytes exceeds max.message.bytes={mx}", size=h.size, max_size=mx
                )
            return self._assign_and_append(buf, [h], leader_epoch, now_ms)

        return self._locked(go)

    def append_batches(
        self,
        data: Any,
        keep_offsets: bool,
        leader_epoch: int,
        now_ms: int,
        start: int = 0,
        end: int | None = None,
    ) -> tuple[int, int, int, int, int]:
        buf = bytearray(memoryview(data)[start:end])

        def go() -> tuple[int, int, int, int, int]:
            if keep_offsets:
                headers = validate_batches(buf, self._cfg["max_message_bytes"], self.end_offset)
                return self._append_validated(buf, headers, now_ms, -1)
            headers = validate_batches(buf, self._cfg["max_message_bytes"], None)
            return self._assign_and_append(buf, headers, leader_epoch, now_ms)

        return self._locked(go)

    def _assign_and_append(
        self, buf: bytearray, headers: list[BatchHeader], leader_epoch: int, now_ms: int
    ) -> tuple[int, int, int, int, int]:
        lat = now_ms if self._cfg["log_append_time"] else None
        headers = assign_offsets(buf, headers, self.end_offset, leader_epoch, lat)
        return self._append_validated(buf, headers, now_ms, -1 if lat is None else lat)

    def _append_validated(
        self, buf: bytearray, headers: list[BatchHeader], now_ms: int, stamped: int
    ) -> tuple[int, int, int, int, int]:
        first, last = headers[0].base_offset, headers[-1].last_offset
        max_ts = max(h.max_timestamp for h in headers)
        count = last - first + 1
        cfg = self._cfg
        if self._segments[-1].should_roll(len(buf), last, cfg["segment_bytes"], cfg["segment_ms"], now_ms):
            self._roll(now_ms)
        try:
            self._segments[-1].append(buf, headers)
        except TidelogError as e:
            self._fail_on_closed(e)
            raise
        self._unflushed += count
        due = cfg["flush_messages"] is not None and self._unflushed >= cfg["flush_messages"]
        due = due or (cfg["flush_ms"] is not None and now_ms - self._last_flush_ms >= cfg["flush_ms"])
        if due:
            self._flush(now_ms)
        return first, last, max_ts, stamped, count

    # ---- roll / flush ----

    def _push_active_segment(self, base: int, now_ms: int) -> None:
        """Creates the segment at ``base`` as the new active one, durable in the directory."""
        cfg = self._cfg
        self._segments.append(
            Segment(self._dir, base, cfg["index_interval_bytes"], cfg["segment_index_bytes"], now_ms)
        )
        sync_dir(self._dir)

    def roll(self, now_ms: int) -> None:
        self._locked(lambda: self._roll(now_ms))

    def _roll(self, now_ms: int) -> None:
        active = self._segments[-1]
        if active.size == 0:
            return
        base = self.end_offset
        try:
            active.make_inactive()
        except TidelogError as e:
            self._fail_on_closed(e)
            raise
        self._push_active_segment(base, now_ms)
        self._recovery_point = base
        self._unflushed = 0
        self._last_flush_ms = now_ms
        self._write_checkpoint(False)
        self._apply_retention(now_ms)

    def flush(self, now_ms: int) -> None:
        """fsyncs without holding the lock, so appends and reads go on meanwhile."""

        def target() -> tuple[int, int]:
            fd = self._segments[-1].fd
            assert fd is not None, "the active segment holds its file open"
            return os.dup(fd), self.end_offset

        fd, end = self._locked(target)
        try:
            datasync(fd)
            failure: OSError | None = None
        except OSError as e:
            failure = e
        finally:
            os.close(fd)

        def done() -> None:
            if failure is not None:
                self._closed = f"flush failed: {failure}"
                raise storage_error("fsync segment", self._dir, failure)
            self._recovery_point = max(self._recovery_point, min(end, self.end_offset))
            self._unflushed = 0
            self._last_flush_ms = now_ms

        self._locked(done)

    def _flush(self, now_ms: int) -> None:
        try:
            self._segments[-1].flush()
        except TidelogError as e:
            # After a failed fsync the page cache state is unknown: refuse further use.
            self._closed = f"flush failed: {e}"
            raise
        self._recovery_point = self.end_offset
        self._unflushed = 0
        self._last_flush_ms = now_ms

    # ---- reads ----

    def _check_range(self, offset: int) -> None:
        if offset < self._start or offset > self.end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside the log's range [{self._start}, {self.end_offset}]",
                offset=offset,
                start_offset=self._start,
                end_offset=self.end_offset,
            )

    def _segment_index_for(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self._segments, offset, key=lambda s: s.base_offset) - 1)

    def index_lookup(self, offset: int) -> tuple[int, int, int]:
        def go() -> tuple[int, int, int]:
            self._check_range(offset)
            seg = self._segments[self._segment_index_for(offset)]
            entry, position = seg.offset_index.lookup(offset)
            return seg.base_offset, entry, position

        return self._locked(go)

    def _locate(self, offset: int) -> tuple[Segment, BatchHeader] | None:
        self._check_range(offset)
        for seg in self._segments[self._segment_index_for(offset) :]:
            h = seg.find_batch(offset)
            if h is not None:
                return seg, h
        return None

    def _read_batches(self, offset: int, max_bytes: int) -> tuple[bytes, list[BatchHeader], FileSlice | None]:
        """Batch positions are relative to the returned bytes; the range says where they lie."""
        found = self._locate(offset)
        if found is None:
            return b"", [], None
        seg, h = found
        rng = seg.batch_range(h.position, max_bytes)
        buf, headers = rng.read_batches()
        return buf, headers, rng

    def read_raw(self, offset: int, max_bytes: int) -> bytes:
        return self._locked(lambda: self._read_batches(offset, max_bytes)[0])

    def read_records(self, offset: int, max_records: int, max_bytes: int) -> list[Record]:
        buf, headers, rng = self._locked(lambda: self._read_batches(offset, max_bytes))
        out: list[Record] = []
        view = memoryview(buf)
        for h in headers:
            if len(out) >= max_records:
                break
            try:
                out += decode_records(
                    view[h.position : h.position + h.size], h, offset, max_records - len(out)
                )
            except (ValueError, UnsupportedCompressionError) as e:
                # The batches before the damaged one stand; it is reported when read first.
                if out:
                    break
                if isinstance(e, UnsupportedCompressionError):
                    raise
                assert rng is not None
                raise corrupt_segment(rng.path, rng.position + h.position, str(e)) from None
        return out

    def slice(self, offset: int, max_bytes: int, max_offset: int | None = None) -> FileSlice | None:
        def go() -> FileSlice | None:
            found = self._locate(offset)
            if found is None:
                return None
            seg, h = found
            end = None
            # A bound below the log end (a leader's high watermark) ends the range where the
            # batch holding it starts, if that batch is in this segment.
            if max_offset is not None and max_offset < self.end_offset:
                bound = self._locate(max(max_offset, offset))
                if bound is not None and bound[0] is seg:
                    end = bound[1].position
                    if end <= h.position:
                        return None
            return seg.slice(h.position, max_bytes, end)

        return self._locked(go)

    def offset_for_time(self, timestamp: int) -> tuple[int, int] | None:
        def go() -> tuple[int, int] | None:
            for seg in self._segments:
                if seg.next_offset <= self._start:
                    continue
                found = seg.offset_for_time(timestamp, self._start)
                if found is not None:
                    return found
            return None

        return self._locked(go)

    # ---- truncation and retention ----

    def truncate_to(self, offset: int, now_ms: int) -> None:
        self._locked(lambda: self._truncate_to(offset, now_ms))

    def _truncate_to(self, offset: int, now_ms: int) -> None:
        if offset >= self.end_offset:
            return
        cfg = self._cfg
        # The checkpoint is lowered to the new end first: a crash mid-way must not make the
        # next open take the cut offsets for lost durable ones (and skip past them).
        found = self._locate(offset) if offset >= self._start else None
        self._recovery_point = min(self._recovery_point, found[1].base_offset if found else offset)
        self._write_checkpoint(False)
        if offset < self._start:
            self._restart_at(offset, now_ms)
        else:
            while len(self._segments) > 1 and self._segments[-1].base_offset > offset:
                self._segments.pop().delete()
            try:
                self._segments[-1].truncate_to(offset)
            except TidelogError as e:
                self._fail_on_closed(e)
                raise
            self._segments[-1].make_active(cfg["segment_index_bytes"])
            self._segments[-1].flush()
            self._start = min(self._start, self.end_offset)
        self._recovery_point = min(self._recovery_point, self.end_offset)
        self._write_checkpoint(False)

    def truncate_fully_and_start_at(self, offset: int, now_ms: int) -> None:
        def go() -> None:
            # The checkpoint says so before any segment goes: a crash mid-way never reopens
            # the log below ``offset``.
            self._recovery_point = self._start = offset
            self._write_checkpoint(False)
            self._restart_at(offset, now_ms)
            self._write_checkpoint(False)

        self._locked(go)

    def _restart_at(self, offset: int, now_ms: int) -> None:
        """Deletes every segment and starts an empty active one at ``offset``."""
        for seg in self._segments:
            seg.delete()
        self._segments = []
        self._push_active_segment(offset, now_ms)
        self._start = offset

    def delete_records_before(self, offset: int) -> None:
        def go() -> None:
            if offset > self.end_offset:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside the log's range [{self._start}, {self.end_offset}]",
                    offset=offset,
                    start_offset=self._start,
                    end_offset=self.end_offset,
                )
            if offset <= self._start:
                return
            self._start = offset
            self._write_checkpoint(False)
            self._delete_segments_below_start()

        self._locked(go)

    def _delete_segments_below_start(self) -> int:
        n = 0
        while len(self._segments) > 1 and self._segments[1].base_offset <= self._start:
            self._segments.pop(0).delete()
            n += 1
        return n

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Applies changed settings at once (index sizes with the next segment)."""
        cfg = _settings(config)

        def go() -> None:
            self._cfg = cfg

        self._locked(go)

    def apply_retention(self, now_ms: int) -> int:
        return self._locked(lambda: self._apply_retention(now_ms))

    def _apply_retention(self, now_ms: int) -> int:
        cfg = self._cfg
        segs = self._segments
        inactive = len(segs) - 1
        doomed = 0
        if cfg["retention_ms"] >= 0:
            while doomed < inactive and now_ms - segs[doomed].max_timestamp > cfg["retention_ms"]:
                doomed += 1
        if cfg["retention_bytes"] >= 0:
            excess = self.size_bytes - cfg["retention_bytes"] - sum(s.size for s in segs[:doomed])
            while doomed < inactive and excess - segs[doomed].size >= 0:
                excess -= segs[doomed].size
                doomed += 1
        if doomed == 0:
            return 0
        self._start = max(self._start, segs[doomed].base_offset)
        self._write_checkpoint(False)
        return self._delete_segments_below_start()

    def close(self) -> None:
        with self._mutex:
            if self._closed is not None:
                return
            self._segments[-1].make_inactive()
            self._recovery_point = self.end_offset
            self._write_checkpoint(True)
            self._closed = "closed"
            for seg in self._segments:
                seg.close()
            os.close(self._lock_fd)
