"""Kafka's checkpoint files, in its text format (a version line ``0``, a count line, then one
entry per line), so Kafka's tools and ours read each other's:

- ``replication-offset-checkpoint`` in the data directory: ``<topic> <partition> <high
  watermark>`` for every partition hosted, so a restarted broker's high watermark never goes
  back (consumers are never shown less than they were);
- ``leader-epoch-checkpoint`` in each partition directory: ``<leader epoch> <start offset>``,
  the first offset written in each epoch (what OffsetForLeaderEpoch answers from).

Both are written whole to a temporary file, fsynced and renamed over the old one."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from tidelog.storage.fileio import write_file_atomic

log = logging.getLogger("tidelog.broker")
VERSION = 0
REPLICATION_OFFSET_CHECKPOINT = "replication-offset-checkpoint"
LEADER_EPOCH_CHECKPOINT = "leader-epoch-checkpoint"


def write_checkpoint(path: str, entries: Iterable[tuple[object, ...]]) -> None:
    """Writes ``entries`` durably, replacing the file (blocking I/O)."""
    rows = [" ".join(map(str, e)) for e in entries]
    text = "\n".join([str(VERSION), str(len(rows)), *rows]) + "\n"
    write_file_atomic(os.path.dirname(path) or ".", os.path.basename(path), text.encode())


def read_checkpoint(path: str, fields: int) -> list[list[str]]:
    """The entries of a checkpoint file, each ``fields`` words; [] if there is none. A file
    that does not parse is logged and taken as empty: a checkpoint only saves work or keeps a
    bound, and every caller has a safe answer without one."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    try:
        if int(lines[0]) != VERSION:
            raise ValueError(f"version {lines[0]}")
        count = int(lines[1])
        entries = [line.split() for line in lines[2 : 2 + count]]
        if len(entries) != count or any(len(e) != fields for e in entries):
            raise ValueError(f"expected {count} entries of {fields} fields")
        return entries
    except (ValueError, IndexError) as e:
        log.warning("checkpoint %s ignored: it does not parse (%s)", path, e)
        return []


def read_offsets(path: str) -> dict[tuple[str, int], int]:
    """A ``replication-offset-checkpoint`` as {(topic, partition): offset}."""
    out: dict[tuple[str, int], int] = {}
    for topic, partition, offset in read_checkpoint(path, 3):
        try:
            out[(topic, int(partition))] = int(offset)
        except ValueError:
            log.warning("checkpoint %s: entry %s %s %s ignored", path, topic, partition, offset)
    return out


class LeaderEpochCache:
    """A partition's leader epochs and the first offset of each, kept in its
    ``leader-epoch-checkpoint``. Entries only grow in epoch and offset; truncating the log
    drops those at or past its new end."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, LEADER_EPOCH_CHECKPOINT)
        self.entries: list[tuple[int, int]] = []
        for epoch, start in read_checkpoint(self.path, 2):
            try:
                self.entries.append((int(epoch), int(start)))
            except ValueError:
                self.entries = []
                break

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1][0] if self.entries else -1

    def assign(self, epoch: int, start_offset: int) -> bool:
        """Records that ``epoch`` starts at ``start_offset`` if it is newer than the latest;
        returns whether anything changed (then ``write`` it)."""
        if epoch < 0 or epoch <= self.latest_epoch:
            return False
        self.entries.append((epoch, start_offset))
        return True

    def starts_at_or_after(self, offset: int) -> bool:
        """Whether an epoch starts at or past ``offset`` (truncating there would drop it)."""
        return bool(self.entries) and self.entries[-1][1] >= offset

    def truncate_from_end(self, end_offset: int) -> bool:
        """Drops the epochs that start at or past ``end_offset`` (the log was cut there)."""
        kept = [e for e in self.entries if e[1] < end_offset]
        changed = len(kept) != len(self.entries)
        self.entries = kept
        return changed

    def clear(self) -> None:
        """Forgets every epoch (the log was emptied); ``write`` it then."""
        self.entries = []

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """(the largest epoch <= ``epoch``, the offset where the next one starts or the log end
        offset), as OffsetForLeaderEpoch answers; (-1, -1) if there is none."""
        found = [i for i, (e, _) in enumerate(self.entries) if e <= epoch]
        if not found:
            return -1, -1
        i = found[-1]
        end = self.entries[i + 1][1] if i + 1 < len(self.entries) else log_end_offset
        return self.entries[i][0], end

    def write(self) -> None:
        """Writes the file durably (blocking I/O)."""
        write_checkpoint(self.path, self.entries)
