//! One segment of a partition: `<base>.log` (concatenated batches), `<base>.index` and
//! `<base>.timeindex`, named by the 20-digit base offset. Appends go at the end in one write;
//! reads locate a batch through the offset index and scan forward batch by batch.
//!
//! Not thread-safe on its own: the owning `Log` takes `&mut self` to write and `&self` to read.

use crate::batch::{self, BatchInfo, Header, HEADER_LEN, LOG_OVERHEAD};
use crate::error::{Error, Result};
use crate::index::{OffsetIndex, TimeIndex};
use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes read at a time while scanning a segment.
const SCAN_CHUNK: usize = 64 * 1024;
/// Bytes read at a time while scanning headers only (a lookup scans about one index interval).
const HEADER_SCAN_CHUNK: usize = 8 * 1024;

pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

#[cfg(unix)]
pub(crate) fn write_at(file: &File, buf: &[u8], pos: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, buf, pos)
}
#[cfg(windows)]
pub(crate) fn write_at(file: &File, buf: &[u8], pos: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_write(file, buf, pos)
}
#[cfg(unix)]
pub(crate) fn read_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}
#[cfg(windows)]
pub(crate) fn read_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

/// Reads exactly `len` bytes at `pos` (fewer only at end of file).
fn read_exact_at(file: &File, path: &Path, pos: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match read_at(file, &mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// Writes all of `parts` at `pos`: one positional write for one part (the common small
/// append: one syscall), else seek + writev. Appends are the only writes through the file
/// cursor (reads are positional), and the owning log serialises writers.
fn write_all_vectored_at(
    file: &File,
    mut parts: &mut [IoSlice<'_>],
    mut pos: u64,
) -> std::io::Result<()> {
    if let [one] = parts {
        let mut buf: &[u8] = one;
        while !buf.is_empty() {
            match write_at(file, buf, pos) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
    let mut f = file;
    f.seek(SeekFrom::Start(pos))?;
    while !parts.is_empty() {
        match f.write_vectored(parts) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What scanning one step of a segment found.
pub enum Scanned<'a> {
    Batch(BatchInfo, &'a [u8]),
    End,
    /// The file ends inside a batch at this position.
    Torn(u64),
    Invalid(u64, String),
}

/// Walks the batches of a file range with buffered positional reads. A header-only scan
/// (`headers`) reads just enough to see each batch's header and yields empty bodies.
pub struct BatchScan<'f> {
    file: &'f File,
    path: &'f Path,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_pos: u64,
    header_only: bool,
}

impl<'f> BatchScan<'f> {
    pub fn new(file: &'f File, path: &'f Path, from: u64, end: u64) -> Self {
        BatchScan {
            file,
            path,
            pos: from,
            end,
            buf: Vec::new(),
            buf_pos: from,
            header_only: false,
        }
    }

    pub fn headers(file: &'f File, path: &'f Path, from: u64, end: u64) -> Self {
        BatchScan {
            header_only: true,
            ..Self::new(file, path, from, end)
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Scanned<'_>> {
        if self.pos >= self.end {
            return Ok(Scanned::End);
        }
        loop {
            let off = (self.pos - self.buf_pos) as usize;
            let in_buf = off <= self.buf.len();
            if in_buf {
                match batch::parse_header_only(
                    &self.buf,
                    off.min(self.buf.len()),
                    self.buf_pos,
                    self.header_only,
                ) {
                    Header::Batch(info) => {
                        if self.pos + u64::from(info.size) > self.end {
                            return Ok(Scanned::Torn(self.pos));
                        }
                        self.pos += u64::from(info.size);
                        let bytes = if self.header_only {
                            &[][..]
                        } else {
                            &self.buf[off..off + info.size as usize]
                        };
                        return Ok(Scanned::Batch(info, bytes));
                    }
                    Header::Invalid(reason) => return Ok(Scanned::Invalid(self.pos, reason)),
                    Header::Incomplete => {}
                }
            }
            // Need more bytes: as many as the declared length, if known, else a header's worth.
            let avail = if in_buf { &self.buf[off..] } else { &[][..] };
            let need = if avail.len() >= LOG_OVERHEAD && !self.header_only {
                i32::from_be_bytes(avail[8..12].try_into().expect("4 bytes")) as u64
                    + LOG_OVERHEAD as u64
            } else {
                HEADER_LEN as u64
            };
            if self.pos + need > self.end {
                return Ok(Scanned::Torn(self.pos));
            }
            let chunk = if self.header_only {
                HEADER_SCAN_CHUNK
            } else {
                SCAN_CHUNK
            };
            let want = need.max(chunk as u64).min(self.end - self.pos) as usize;
            self.buf = read_exact_at(self.file, self.path, self.pos, want)?;
            self.buf_pos = self.pos;
            if self.buf.len() < want {
                // The file is shorter than its recorded size: treat the rest as torn.
                self.end = self.pos + self.buf.len() as u64;
            }
        }
    }
}

/// A byte range of a segment file, kept open so it can be read or sent after the log lock is
/// released.
#[derive(Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub path: PathBuf,
    pub position: u64,
    pub length: u64,
}

impl FileSlice {
    /// Reads the range into `buf` (exactly `length` bytes) and checks that it holds whole
    /// batches with valid CRCs; returns the facts of the valid batches it starts with
    /// (positions relative to `buf`). A damaged batch after valid ones ends the run; an error
    /// only when the first batch is damaged.
    pub fn read_batches_into(&self, buf: &mut [u8]) -> Result<Vec<BatchInfo>> {
        let mut done = 0;
        while done < buf.len() {
            match read_at(&self.file, &mut buf[done..], self.position + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", &self.path, e)),
            }
        }
        let infos = valid_batches(&buf[..done], &self.path, self.position)?;
        if infos.is_empty() && done < buf.len() {
            return Err(Error::corrupt_segment(
                &self.path,
                self.position + done as u64,
                "segment shrank while reading",
            ));
        }
        Ok(infos)
    }

    /// The range's valid leading batches (see `read_batches_into`), cut to their length.
    pub fn read_batches(&self) -> Result<(Vec<u8>, Vec<BatchInfo>)> {
        let mut buf = vec![0u8; self.length as usize];
        let infos = self.read_batches_into(&mut buf)?;
        buf.truncate(valid_len(&infos));
        Ok((buf, infos))
    }
}

/// Bytes covered by batches read from the start of a buffer.
pub fn valid_len(infos: &[BatchInfo]) -> usize {
    infos
        .last()
        .map_or(0, |i| i.position as usize + i.size as usize)
}

/// Walks `buf` (read from `path` at `file_position`), checking each batch's header and CRC;
/// returns the valid batches it starts with, or the first batch's error if that one is bad.
fn valid_batches(buf: &[u8], path: &Path, file_position: u64) -> Result<Vec<BatchInfo>> {
    let mut infos = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let at = file_position + pos as u64;
        let checked = match batch::parse_header(buf, pos, 0) {
            Header::Batch(info) => batch::check_batch(&buf[pos..pos + info.size as usize], &info)
                .map(|()| info)
                .map_err(|r| Error::corrupt_segment(path, at, r)),
            Header::Incomplete => Err(Error::corrupt_segment(
                path,
                at,
                "batch runs past the end of the read",
            )),
            Header::Invalid(reason) => Err(Error::corrupt_segment(path, at, reason)),
        };
        match checked {
            Ok(info) => {
                pos += info.size as usize;
                infos.push(info);
            }
            Err(e) if infos.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(infos)
}

pub struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    /// Held open while the segment is active (or being recovered); an inactive segment holds
    /// no descriptor and its file is opened read-only for each use (`log_file`), so the
    /// descriptors a partition needs do not grow with its segments.
    log: Option<Arc<File>>,
    size: u64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    index_interval_bytes: u64,
    bytes_since_last_index_entry: u64,
    next_offset: i64,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    /// When this segment was created or opened, for `segment.ms`.
    pub created_ms: i64,
}

/// What recovery cut from a segment: everything from `position` (the first invalid or partial
/// batch; `next_offset` is the offset it would have held), `bytes` long, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    pub segment: i64,
    pub position: u64,
    pub next_offset: i64,
    pub bytes: u64,
    pub reason: String,
}

/// How an opened segment's indexes were found.
pub struct Opened {
    pub segment: Segment,
    /// True if either index file was missing or failed its sanity check.
    pub indexes_suspect: bool,
}

impl Segment {
    fn paths(dir: &Path, base: i64) -> (PathBuf, PathBuf, PathBuf) {
        (
            dir.join(file_name(base, ".log")),
            dir.join(file_name(base, ".index")),
            dir.join(file_name(base, ".timeindex")),
        )
    }

    /// Opens (or creates) the segment. `preallocate` is `segment.index.bytes` for the active
    /// segment, `None` for an inactive one. The caller must call `load` or `recover` next.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u64,
        preallocate: Option<usize>,
        now_ms: i64,
    ) -> Result<Opened> {
        let (log_path, index_path, time_path) = Self::paths(dir, base_offset);
        let indexes_existed = index_path.exists() && time_path.exists();
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(|e| Error::io("open segment", &log_path, e))?;
        let size = log
            .metadata()
            .map_err(|e| Error::io("stat segment", &log_path, e))?
            .len();
        let (offset_index, _) = OffsetIndex::open(&index_path, base_offset, preallocate)?;
        let (time_index, _) = TimeIndex::open(&time_path, base_offset, preallocate)?;
        let segment = Segment {
            base_offset,
            log_path,
            log: Some(Arc::new(log)),
            size,
            offset_index,
            time_index,
            index_interval_bytes,
            bytes_since_last_index_entry: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            created_ms: now_ms,
        };
        Ok(Opened {
            segment,
            indexes_suspect: !indexes_existed,
        })
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
    /// The error for a scan that stopped on a torn or invalid batch.
    fn scan_error(&self, scanned: Scanned<'_>) -> Error {
        match scanned {
            Scanned::Torn(pos) => Error::corrupt_segment(
                &self.log_path,
                pos,
                "batch runs past the end of the segment",
            ),
            Scanned::Invalid(pos, reason) => Error::corrupt_segment(&self.log_path, pos, reason),
            Scanned::Batch(info, _) => {
                Error::corrupt_segment(&self.log_path, info.position, "unexpected batch")
            }
            Scanned::End => {
                Error::corrupt_segment(&self.log_path, self.size, "unexpected end of segment")
            }
        }
    }

    /// The `.log` file, shared (for reading, syncing or sending outside the log's lock): the
    /// one held open, or (inactive segment) a new read-only descriptor for this use.
    pub fn file(&self) -> Result<Arc<File>> {
        match &self.log {
            Some(file) => Ok(Arc::clone(file)),
            None => File::open(&self.log_path)
                .map(Arc::new)
                .map_err(|e| Error::io("open segment", &self.log_path, e)),
        }
    }

    /// The file for changing it (append, truncation), opened read-write again if released.
    fn writable(&mut self) -> Result<Arc<File>> {
        if self.log.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.log_path)
                .map_err(|e| Error::io("open segment", &self.log_path, e))?;
            self.log = Some(Arc::new(file));
        }
        self.file()
    }

    /// Closes the held descriptor of an inactive segment (its data is durable by now).
    pub fn release_file(&mut self) {
        self.log = None;
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Loads a cleanly closed segment: trusts its indexes if they pass the sanity check and
    /// scans the batches after the last index entry. Returns false if the indexes must be rebuilt.
    pub fn load(&mut self) -> Result<bool> {
        if !self.offset_index.sanity_check(self.size) {
            return Ok(false);
        }
        self.max_timestamp = -1;
        if let Some((ts, off)) = self.time_index.last_entry() {
            self.max_timestamp = ts;
            self.offset_of_max_timestamp = off;
        }
        let start = match self.offset_index.entries() {
            0 => 0,
            n => u64::from(self.offset_index.get(n - 1).1),
        };
        self.next_offset = self.base_offset;
        self.bytes_since_last_index_entry = 0;
        let log = self.file()?;
        let mut scan = BatchScan::headers(&log, &self.log_path, start, self.size);
        let mut first = true;
        loop {
            match scan.next()? {
                Scanned::Batch(info, _) => {
                    if first
                        && start > 0
                        && info.last_offset()
                            != self.offset_index.get(self.offset_index.entries() - 1).0
                    {
                        return Ok(false);
                    }
                    first = false;
                    self.next_offset = info.next_offset();
                    if info.max_timestamp > self.max_timestamp {
                        self.max_timestamp = info.max_timestamp;
                        self.offset_of_max_timestamp = info.last_offset();
                    }
                }
                Scanned::End => break,
                Scanned::Torn(_) | Scanned::Invalid(..) => return Ok(false),
            }
        }
        Ok(self.time_index.sanity_check(self.next_offset))
    }

    /// Rebuilds the indexes by scanning every batch, checking length, magic, CRC, counts and
    /// offset order; truncates the file at the first invalid or partial batch and says where.
    /// No size limit applies: `max.message.bytes` governs new produce requests, never what is
    /// already stored (a lowered limit must not make recovery cut valid batches).
    pub fn recover(&mut self) -> Result<Option<Truncation>> {
        self.offset_index.set_entries(0);
        self.time_index.set_entries(0);
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base_offset;
        self.next_offset = self.base_offset;
        let mut valid_end = 0u64;
        let mut expected: Option<i64> = None;
        let (log, path) = (self.file()?, self.log_path.clone());
        let mut scan = BatchScan::new(&log, &path, 0, self.size);
        let mut infos = Vec::new();
        let reason = loop {
            let (info, bytes) = match scan.next()? {
                Scanned::Batch(info, bytes) => (info, bytes),
                Scanned::End => break None,
                Scanned::Torn(_) => {
                    break Some("batch runs past the end of the segment".to_string())
                }
                Scanned::Invalid(_, reason) => break Some(reason),
            };
            if let Err(reason) = batch::check_batch(bytes, &info) {
                break Some(reason);
            }
            let in_order = match expected {
                Some(next) => info.base_offset == next,
                None => info.base_offset >= self.base_offset,
            };
            if !in_order || info.last_offset() - self.base_offset > i64::from(u32::MAX) {
                break Some(format!(
                    "batch at offset {} is out of order in the segment",
                    info.base_offset
                ));
            }
            expected = Some(info.next_offset());
            valid_end = info.position + u64::from(info.size);
            infos.push(info);
            if infos.len() >= 1024 {
                self.index_batches(&infos, 0);
                infos.clear();
            }
        };
        drop(scan);
        self.index_batches(&infos, 0);
        let truncated = self.size - valid_end;
        if truncated == 0 {
            return Ok(None);
        }
        self.writable()?
            .set_len(valid_end)
            .map_err(|e| Error::io("truncate segment", &self.log_path, e))?;
        self.size = valid_end;
        Ok(Some(Truncation {
            segment: self.base_offset,
            position: valid_end,
            next_offset: self.next_offset,
            bytes: truncated,
            reason: reason.unwrap_or_else(|| "the file is shorter than its batches".to_string()),
        }))
    }

    /// Updates indexes and tail state for batches just written; `file_base` is added to each
    /// batch's buffer position to get its file position.
    fn index_batches(&mut self, infos: &[BatchInfo], file_base: u64) {
        for info in infos {
            if info.max_timestamp > self.max_timestamp {
                self.max_timestamp = info.max_timestamp;
                self.offset_of_max_timestamp = info.last_offset();
            }
            // A full index gets no more entries (reads scan further); the segment rolls on it.
            if self.bytes_since_last_index_entry > self.index_interval_bytes
                && !self.offset_index.is_full()
            {
                self.offset_index
                    .append(info.last_offset(), (file_base + info.position) as u32);
                self.time_index
                    .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
                self.bytes_since_last_index_entry = 0;
            }
            self.bytes_since_last_index_entry += u64::from(info.size);
            self.next_offset = info.next_offset();
        }
    }

    /// True if appending `bytes` ending at `last_offset` must go to a new segment.
    pub fn should_roll(
        &self,
        bytes: u64,
        last_offset: i64,
        segment_bytes: u64,
        segment_ms: i64,
        now_ms: i64,
    ) -> bool {
        if self.size == 0 {
            return false;
        }
        self.size + bytes > segment_bytes
            || now_ms - self.created_ms > segment_ms
            || self.offset_index.is_full()
            || self.time_index.is_full()
            || last_offset - self.base_offset > i64::from(i32::MAX)
    }

    /// Appends validated batches (offsets already assigned) with one vectored write of
    /// `parts`. On failure the file is cut back to its previous size so no part of the
    /// batches is visible. `infos` positions are relative to the concatenation of `parts`.
    pub fn append(&mut self, parts: &mut [IoSlice<'_>], infos: &[BatchInfo]) -> Result<()> {
        let at = self.size;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let log = self.writable()?;
        if let Err(e) = write_all_vectored_at(&log, parts, at) {
            let err = Error::io("append to segment", &self.log_path, e);
            return match log.set_len(at) {
                Ok(()) => Err(err),
                Err(e2) => Err(Error::Closed {
                    reason: format!("{err}; cutting the partial write back also failed: {e2}"),
                }),
            };
        }
        self.size += total as u64;
        self.index_batches(infos, at);
        Ok(())
    }

    /// The greatest offset-index entry at or below `target`: (offset, position).
    pub fn index_lookup(&self, target: i64) -> (i64, u32) {
        self.offset_index.lookup(target)
    }

    /// Position of the first batch whose last offset is >= `target`, or None if no batch is.
    pub fn find_batch(&self, target: i64) -> Result<Option<BatchInfo>> {
        let (_, start) = self.index_lookup(target);
        let log = self.file()?;
        let mut scan = BatchScan::headers(&log, &self.log_path, u64::from(start), self.size);
        loop {
            match scan.next()? {
                Scanned::Batch(info, _) if info.last_offset() >= target => return Ok(Some(info)),
                Scanned::Batch(..) => {}
                Scanned::End => return Ok(None),
                other => return Err(self.scan_error(other)),
            }
        }
    }

    /// Length of the run of whole batches from `position` that a read of `max_bytes` returns:
    /// all the rest of the segment if it fits; else up to the last offset-index entry (a batch
    /// start) within `max_bytes`, found without I/O; else the batches a scan finds within
    /// `max_bytes` — and always at least the first batch.
    pub fn whole_batches_len(&self, position: u64, max_bytes: u64) -> Result<u64> {
        let remaining = self.size - position;
        if remaining <= max_bytes {
            return Ok(remaining);
        }
        let limit = position + max_bytes;
        let boundary = u64::from(self.offset_index.floor_position(limit));
        if boundary > position {
            return Ok(boundary - position);
        }
        let mut end = position;
        let log = self.file()?;
        let mut scan = BatchScan::headers(&log, &self.log_path, position, self.size);
        loop {
            match scan.next()? {
                Scanned::Batch(info, _) => {
                    let next = info.position + u64::from(info.size);
                    if next > limit && end > position {
                        break;
                    }
                    end = next;
                }
                Scanned::End => break,
                other => return Err(self.scan_error(other)),
            }
        }
        Ok(end - position)
    }

    /// The whole batches a read of `max_bytes` from `position` returns, as a file range.
    pub fn batch_range(&self, position: u64, max_bytes: u64) -> Result<FileSlice> {
        let length = self.whole_batches_len(position, max_bytes)?;
        Ok(FileSlice {
            file: self.file()?,
            path: self.log_path.clone(),
            position,
            length,
        })
    }

    /// The file range for a fetch from `position`: up to `max_bytes`, but at least the first
    /// whole batch. Like Kafka, the range may end inside a batch (clients drop a partial tail).
    /// Whole batches from `position` up to `max_bytes` (at least one batch), ending at or
    /// before `end` (a batch boundary) when given.
    pub fn slice(&self, position: u64, max_bytes: u64, end: Option<u64>) -> Result<FileSlice> {
        // One descriptor for the header read and the send (an inactive segment opens one).
        let file = self.file()?;
        let head = read_exact_at(&file, &self.log_path, position, LOG_OVERHEAD)?;
        if head.len() < LOG_OVERHEAD {
            return Err(Error::corrupt_segment(
                &self.log_path,
                position,
                "batch header past the end of the segment",
            ));
        }
        let first = i32::from_be_bytes(head[8..12].try_into().expect("4 bytes")) as u64
            + LOG_OVERHEAD as u64;
        let length = max_bytes
            .max(first)
            .min(end.unwrap_or(self.size).min(self.size) - position);
        Ok(FileSlice {
            file,
            path: self.log_path.clone(),
            position,
            length,
        })
    }

    /// First (offset, timestamp) of a record with timestamp >= `timestamp`, if this segment has one.
    pub fn offset_for_time(&self, timestamp: i64, min_offset: i64) -> Result<Option<(i64, i64)>> {
        if self.max_timestamp < timestamp {
            return Ok(None);
        }
        let (_, from_offset) = self.time_index.lookup(timestamp);
        let Some(first) = self.find_batch(from_offset.max(min_offset))? else {
            return Ok(None);
        };
        let log = self.file()?;
        let mut scan = BatchScan::new(&log, &self.log_path, first.position, self.size);
        loop {
            match scan.next()? {
                Scanned::Batch(info, bytes) if info.max_timestamp >= timestamp => {
                    batch::check_batch(bytes, &info)
                        .map_err(|r| Error::corrupt_segment(&self.log_path, info.position, r))?;
                    let mut found = None;
                    batch::for_each_record(bytes, &info, min_offset, |r| {
                        if r.timestamp >= timestamp {
                            found = Some((r.offset, r.timestamp));
                            return false;
                        }
                        true
                    })
                    .map_err(|e| crate::log::decode_error(&self.log_path, info.position, e))?;
                    if found.is_some() {
                        return Ok(found);
                    }
                }
                Scanned::Batch(..) => {}
                Scanned::End => return Ok(None),
                other => return Err(self.scan_error(other)),
            }
        }
    }

    /// Removes the batch holding `offset` and everything after it. Returns the bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<u64> {
        let Some(info) = self.find_batch(offset)? else {
            return Ok(0);
        };
        let cut = info.position;
        self.offset_index.truncate_to(info.base_offset);
        self.time_index.truncate_to(info.base_offset);
        self.writable()?
            .set_len(cut)
            .map_err(|e| Error::io("truncate segment", &self.log_path, e))?;
        let removed = self.size - cut;
        self.size = cut;
        if !self.load()? {
            self.recover()?;
        }
        Ok(removed)
    }

    /// Adds the final time-index entry (as Kafka does when a segment stops being active).
    pub fn seal_time_index(&mut self) {
        self.time_index
            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
    }

    /// Called when this segment stops being the active one: final time-index entry, indexes
    /// trimmed to their entries, everything fsynced.
    pub fn make_inactive(&mut self) -> Result<()> {
        self.seal_time_index();
        self.flush()?;
        self.offset_index.trim()?;
        self.time_index.trim()?;
        self.release_file();
        Ok(())
    }

    /// Grows the indexes back to full size when this segment becomes the active one again.
    pub fn make_active(&mut self, index_bytes: usize) -> Result<()> {
        self.writable()?;
        self.offset_index.preallocate(index_bytes)?;
        self.time_index.preallocate(index_bytes)
    }

    /// fsyncs the log data. The indexes are not synced here: recovery rebuilds an active
    /// segment's indexes from its data, and `make_inactive` makes them durable (via `trim`).
    pub fn flush(&self) -> Result<()> {
        match &self.log {
            Some(log) => log
                .sync_data()
                .map_err(|e| Error::io("fsync segment", &self.log_path, e)),
            None => Ok(()), // released only once durable
        }
    }

    /// Deletes the three files (the log first, so a crash leaves at most orphan indexes).
    pub fn delete(self) -> Result<()> {
        let index_path = self.offset_index.path().to_path_buf();
        let time_path = self.time_index.path().to_path_buf();
        drop(self.offset_index);
        drop(self.time_index);
        for p in [&self.log_path, &index_path, &time_path] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("delete segment file", p, e)),
            }
        }
        Ok(())
    }
}
