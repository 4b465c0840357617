"""The embedded log API: :class:`Log` (one partition) and :class:`Topic` (N partitions with
Kafka's keyed placement), on either storage engine."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from tidelog import _engine
from tidelog.buffers import RecordsSlice
from tidelog.errors import OffsetOutOfRangeError
from tidelog.partitioning import partition_for_key
from tidelog.records import Record, as_bytes
from tidelog.storage.config import LogConfig
from tidelog.storage.core import CoreLog
from tidelog.storage.fileio import write_file_atomic

_logger = logging.getLogger("tidelog.storage")
POSITIONS_DIR = "positions"
_POSITION_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def wall_clock_ms() -> int:
    """Wall-clock milliseconds, as logs stamp them (the broker's clock too)."""
    return time.time_ns() // 1_000_000


class AppendResult(NamedTuple):
    """What an append wrote."""

    first_offset: int
    last_offset: int
    max_timestamp: int
    #: The time stamped under LogAppendTime, else -1.
    log_append_time: int
    record_count: int


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int


class IndexEntry(NamedTuple):
    """An offset-index lookup: the segment's base offset, the entry's offset and position."""

    segment: int
    offset: int
    position: int


class Truncation(NamedTuple):
    """What recovery cut from one segment: everything from file ``position`` (the first
    invalid or partial batch, which would have held ``next_offset``), ``bytes`` long."""

    segment: int
    position: int
    next_offset: int
    bytes: int
    reason: str


class RecoveryReport(NamedTuple):
    """What opening the log found: a clean shutdown, or what recovery repaired.

    Recovery scans every segment that may hold unflushed data (after an unclean stop) and any
    segment whose indexes are missing or damaged, and cuts each at its first invalid batch.
    Later segments are kept (Kafka drops them; we keep every valid byte), so a damaged segment
    in the middle leaves a gap that reads step over. If damage took the log end below the
    last checkpointed recovery point, the log resumes at that point (``next_offset_raised_to``)
    so that no offset a client may have been given is assigned again.
    """

    clean_shutdown: bool
    segments_recovered: int
    bytes_truncated: int
    truncations: tuple[Truncation, ...] = ()
    next_offset_raised_to: int | None = None


def _log_recovery(path: str, r: RecoveryReport) -> None:
    """One line per log that recovery repaired: WARN for cut data or rebuilt indexes after a
    clean stop, INFO for the routine rescan after an unclean one."""
    if r.truncations or r.next_offset_raised_to is not None:
        cuts = "; ".join(
            f"segment {t.segment}: cut {t.bytes} bytes at position {t.position} "
            f"(from offset {t.next_offset}): {t.reason}"
            for t in r.truncations
        )
        raised = (
            f"; next offset raised to the recovery point {r.next_offset_raised_to}"
            if r.next_offset_raised_to is not None
            else ""
        )
        _logger.warning("recovered %s: %s%s", path, cuts or "no bytes cut", raised)
    elif r.segments_recovered and r.clean_shutdown:
        _logger.warning("recovered %s: rebuilt the indexes of %d segment(s)", path, r.segments_recovered)
    elif r.segments_recovered:
        _logger.info(
            "recovered %s after an unclean stop: %d segment(s) rescanned, nothing cut",
            path,
            r.segments_recovered,
        )


class Log:
    """One partition: an append-only, crash-safe log of Kafka RecordBatch v2 segments.

    >>> import tempfile, tidelog
    >>> with tidelog.Log.open(tempfile.mkdtemp()) as log:
    ...     log.append([(b"k", b"v"), (None, b"v2")], timestamp=1000)
    ...     [(r.offset, r.value) for r in log.read(0)]
    0
    [(0, b'v'), (1, b'v2')]

    One writer and many readers may share a log across threads. Opening a directory that
    another process has open raises :class:`~tidelog.errors.LogLockedError`.
    """

    def __init__(self, core: CoreLog, path: str, engine: str, config: LogConfig) -> None:
        self._core = core
        self.path = path
        self.engine = engine
        self.config = config

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        engine: str | None = None,
        config: LogConfig | Mapping[str, Any] | None = None,
        **settings: Any,
    ) -> Log:
        """Opens (creating if needed) the log in directory ``path``.

        Settings are :class:`LogConfig` fields as keywords (``segment_bytes=1 << 20``), or
        ``config=`` a LogConfig or a mapping of Kafka names (``{"segment.bytes": 1048576}``).
        ``engine`` is ``"auto"``, ``"rust"`` or ``"python"`` (default: ``TIDELOG_ENGINE``, else auto).
        After an unclean shutdown the log is recovered first; see :attr:`recovery_report`.
        """
        cfg = config if isinstance(config, LogConfig) else LogConfig.from_kafka(config or {})
        if settings:
            cfg = _merge(cfg, settings)
        name = _engine.resolve(engine)
        p = os.fspath(path)
        core = _engine.core_log_class(name)(p, cfg.core_settings(), wall_clock_ms())
        log = cls(core, p, name, cfg)
        _log_recovery(p, log.recovery_report)
        return log

    def reconfigure(self, config: LogConfig | Mapping[str, Any] | None = None, **settings: Any) -> None:
        """Applies new settings to the open log, as :meth:`open` takes them: size limits,
        retention and the roll policy at once, index sizes from the next segment on."""
        cfg = config if isinstance(config, LogConfig) else LogConfig.from_kafka(config or {})
        if settings:
            cfg = _merge(cfg, settings)
        self._core.reconfigure(cfg.core_settings())
        self.config = cfg

    def close(self) -> None:
        """Flushes everything and records a clean shutdown. Idempotent."""
        self._core.close()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        offsets = f"[{self.start_offset}, {self.end_offset})"
        return f"<tidelog.Log {self.path!r} engine={self.engine} offsets={offsets}>"

    # ---- state ----

    @property
    def start_offset(self) -> int:
        """The log start offset: the first readable offset."""
        return int(self._core.start_offset)

    @property
    def end_offset(self) -> int:
        """The log end offset (LEO): the offset the next record gets."""
        return int(self._core.end_offset)

    @property
    def recovery_point(self) -> int:
        """Offsets below this are known to be on disk (fsynced)."""
        return int(self._core.recovery_point)

    @property
    def size_bytes(self) -> int:
        return int(self._core.size_bytes)

    @property
    def closed(self) -> bool:
        return bool(self._core.closed)

    @property
    def active_segment_bytes(self) -> int:
        """Bytes in the active segment."""
        return int(self._core.active_segment_bytes)

    @property
    def max_timestamp(self) -> int:
        """The largest record timestamp in the log (-1 if it has none)."""
        return int(self._core.max_timestamp)

    @property
    def segments(self) -> list[int]:
        """Base offsets of the segments, oldest first; the last is the active one."""
        return list(self._core.segments())

    @property
    def recovery_report(self) -> RecoveryReport:
        clean, recovered, cut, cuts, raised = self._core.recovery_report()
        return RecoveryReport(clean, recovered, cut, tuple(Truncation(*c) for c in cuts), raised)

    # ---- writing ----

    def append(self, records: Iterable[Any], *, timestamp: int | None = None, leader_epoch: int = 0) -> int:
        """Appends ``records`` as one batch and returns its base offset.

        Items are ``(key, value)``, ``(key, value, headers)`` or :class:`Record` (whose
        timestamp is kept; its offset is ignored). Keys and values are bytes, str (UTF-8) or
        None; headers a sequence of ``(str, bytes | None)``. Records without a timestamp get
        ``timestamp``, default now (ms).
        """
        now = wall_clock_ms() if timestamp is None else timestamp
        first: int = self._core.append_records(records, leader_epoch, now)[0]
        return first

    def append_batches(
        self,
        raw: bytes | bytearray | memoryview | RecordsSlice,
        *,
        assign_offsets: bool = True,
        leader_epoch: int = 0,
    ) -> AppendResult:
        """Appends pre-built RecordBatch v2 bytes after validating every batch (CRC, length,
        counts). With ``assign_offsets`` (what a broker does) every batch must carry base
        offset 0 and gets the next offsets; without (what a replica does) the batches keep
        their offsets, which must continue :attr:`end_offset` exactly.
        """
        if isinstance(raw, RecordsSlice):  # records of a received frame: read in place
            r = self._core.append_batches(
                raw.data, not assign_offsets, leader_epoch, wall_clock_ms(), raw.start, raw.end
            )
        else:
            r = self._core.append_batches(raw, not assign_offsets, leader_epoch, wall_clock_ms(), 0, None)
        return AppendResult(*r)

    def flush(self) -> None:
        """fsyncs the appended data; the recovery point becomes the log end offset."""
        self._core.flush(wall_clock_ms())

    def roll(self) -> None:
        """Starts a new segment (no-op when the active one is empty)."""
        self._core.roll(wall_clock_ms())

    def truncate_to(self, offset: int) -> None:
        """Removes records at and after ``offset``, by whole batches: the batch holding
        ``offset`` goes too, so :attr:`end_offset` becomes that batch's base offset. Below the
        log start offset the log is emptied and restarts at ``offset``."""
        self._core.truncate_to(offset, wall_clock_ms())

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """Empties the log and restarts it at ``offset``: both :attr:`start_offset` and
        :attr:`end_offset` become ``offset`` (what a replica does when the log it copies
        starts past this one's end)."""
        self._core.truncate_fully_and_start_at(offset, wall_clock_ms())

    def delete_records_before(self, offset: int) -> None:
        """Advances the log start offset to ``offset``; whole segments below it are deleted."""
        self._core.delete_records_before(offset)

    def apply_retention(self, now_ms: int | None = None) -> int:
        """Deletes inactive segments past ``retention_ms``/``retention_bytes``; returns how many.
        (Also runs on every roll.)"""
        return int(self._core.apply_retention(wall_clock_ms() if now_ms is None else now_ms))

    # ---- reading ----

    def read(self, offset: int, *, max_records: int | None = None, max_bytes: int = 1 << 20) -> list[Record]:
        """Records with offset >= ``offset`` from one read of whole batches of at most
        ``max_bytes`` (at least one batch), at most ``max_records`` of them. Empty at the log
        end offset; :class:`~tidelog.errors.OffsetOutOfRangeError` outside
        ``[start_offset, end_offset]``."""
        limit = (1 << 62) if max_records is None else max_records
        records: list[Record] = self._core.read_records(offset, limit, max_bytes)
        return records

    def read_raw(self, offset: int, max_bytes: int = 1 << 20) -> bytes:
        """Whole, CRC-checked batches starting with the one holding ``offset``."""
        return bytes(self._core.read_raw(offset, max_bytes))

    def records(self, offset: int | None = None, *, max_bytes: int = 1 << 20) -> Iterator[Record]:
        """Every record from ``offset`` (default: the start) to the end offset at each read."""
        pos = self.start_offset if offset is None else offset
        while pos < self.end_offset:
            batch = self.read(pos, max_bytes=max_bytes)
            if not batch:
                return
            yield from batch
            pos = batch[-1].offset + 1

    def slice(self, offset: int, max_bytes: int, max_offset: int | None = None) -> Any:
        """The segment file range a fetch at ``offset`` sends (at least one whole batch), as an
        object with ``position``, ``length``, ``send(fd, sent)`` and ``read()``; None at the end.
        ``max_offset`` (a high watermark): only batches wholly below it, None if there is none."""
        return self._core.slice(offset, max_bytes, max_offset)

    def index_lookup(self, offset: int) -> IndexEntry:
        """Where a read of ``offset`` starts scanning, from the in-memory offset index alone:
        the segment holding it and that segment's greatest index entry at or below it."""
        return IndexEntry(*self._core.index_lookup(offset))

    def offset_for_time(self, timestamp: int) -> OffsetAndTimestamp | None:
        """The first record with timestamp >= ``timestamp``, or None."""
        r = self._core.offset_for_time(timestamp)
        return None if r is None else OffsetAndTimestamp(*r)

    # ---- named reader positions ----

    def _position_path(self, name: str) -> str:
        if not isinstance(name, str) or not _POSITION_NAME.fullmatch(name) or name in (".", ".."):
            e = ValueError(f"invalid position name {name!r}: use 1-200 of A-Z a-z 0-9 . _ -")
            e.field = "name"  # type: ignore[attr-defined]
            raise e
        return os.path.join(self.path, POSITIONS_DIR, name)

    def commit(self, name: str, offset: int) -> None:
        """Durably records reader ``name``'s position (the next offset it will read):
        atomic (write, fsync, rename, fsync directory)."""
        path = self._position_path(name)
        if not isinstance(offset, int) or offset < 0 or offset > self.end_offset:
            raise OffsetOutOfRangeError(
                f"position {offset} is outside [0, {self.end_offset}]",
                offset=offset,
                start_offset=self.start_offset,
                end_offset=self.end_offset,
            )
        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        write_file_atomic(directory, name, f"{offset}\n".encode())

    def committed(self, name: str) -> int | None:
        """Reader ``name``'s last committed position, or None."""
        try:
            with open(self._position_path(name), encoding="ascii") as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return None

    def positions(self) -> dict[str, int]:
        """Every committed reader position."""
        directory = os.path.join(self.path, POSITIONS_DIR)
        if not os.path.isdir(directory):
            return {}
        out = {}
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".tmp"):
                pos = self.committed(name)
                if pos is not None:
                    out[name] = pos
        return out


def _merge(cfg: LogConfig, settings: Mapping[str, Any]) -> LogConfig:
    try:
        return dataclasses.replace(cfg, **settings)
    except TypeError as e:
        raise ValueError(f"unknown log setting: {e}") from None


class Topic:
    """N partition logs in directories ``<name>-<p>`` next to each other (Kafka's layout),
    with keyed placement identical to Kafka's Java client:
    ``(murmur2(key) & 0x7fffffff) % partitions``. Null-key batches go round-robin.

    >>> import os, tempfile, tidelog
    >>> with tidelog.Topic.open(os.path.join(tempfile.mkdtemp(), "orders"), partitions=4) as t:
    ...     t.partition_for(b"kafka")
    ...     t.append([(b"kafka", b"v")])
    0
    {0: 0}
    """

    def __init__(self, name: str, logs: list[Log]) -> None:
        self.name = name
        self.partitions = logs
        self._round_robin = itertools.count()

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        partitions: int | None = None,
        engine: str | None = None,
        **settings: Any,
    ) -> Topic:
        """Opens the topic at ``path`` (its partitions are ``path-0`` … ``path-(N-1)``).
        ``partitions`` is required to create it, may grow it, and may not shrink it."""
        base = os.fspath(path).rstrip("/\\")
        parent, name = os.path.split(base)
        existing = 0
        if os.path.isdir(parent or "."):
            pat = re.compile(re.escape(name) + r"-(\d+)")
            nums = [int(m.group(1)) for d in os.listdir(parent or ".") if (m := pat.fullmatch(d))]
            existing = max(nums) + 1 if nums else 0
        if partitions is None:
            if existing == 0:
                raise ValueError(f"topic {name!r} does not exist: give partitions= to create it")
            partitions = existing
        if partitions < 1 or partitions < existing:
            e = ValueError(f"partitions must be at least {max(1, existing)}, not {partitions}")
            e.field = "partitions"  # type: ignore[attr-defined]
            raise e
        logs: list[Log] = []
        try:
            for p in range(partitions):
                logs.append(Log.open(f"{base}-{p}", engine=engine, **settings))
        except BaseException:
            for log in logs:
                log.close()
            raise
        return cls(name, logs)

    def partition(self, p: int) -> Log:
        return self.partitions[p]

    def partition_for(self, key: bytes | str | None) -> int:
        """Where a record with ``key`` goes (None: the next round-robin partition)."""
        k = as_bytes(key, "key")
        if k is None:
            return next(self._round_robin) % len(self.partitions)
        return partition_for_key(k, len(self.partitions))

    def append(self, records: Iterable[Any], *, timestamp: int | None = None) -> dict[int, int]:
        """Places each record by its key, appends one batch per partition, and returns
        {partition: base offset}. All null-key records of one call go to one partition."""
        groups: dict[int, list[Any]] = {}
        null_partition: int | None = None
        for item in records:
            key = item[2] if len(item) == 5 else item[0]
            if key is None:
                if null_partition is None:
                    null_partition = self.partition_for(None)
                p = null_partition
            else:
                p = self.partition_for(key)
            groups.setdefault(p, []).append(item)
        return {
            p: self.partitions[p].append(items, timestamp=timestamp) for p, items in sorted(groups.items())
        }

    def close(self) -> None:
        for log in self.partitions:
            log.close()

    def __enter__(self) -> Topic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
