//! One partition's log: a directory of segments, the log start offset, the log end offset
//! (LEO), the recovery point, the flush policy, retention, truncation and crash recovery.
//!
//! Files besides the segments: `.lock` (held with an exclusive advisory lock while open) and
//! `partition.checkpoint` (log start offset, recovery point, clean-shutdown flag; replaced
//! atomically). Opening without the clean flag scans every segment from the recovery point
//! (and any segment whose indexes are missing or damaged), cuts each one at its first invalid
//! batch and rebuilds its indexes. Unlike Kafka, which drops every unflushed segment after a
//! damaged one, later segments are kept: a bad tail costs only the bytes that are bad.
//!
//! `Log` is `Send` but not `Sync`: callers serialise writers (`&mut self`) against readers
//! (`&self`), e.g. with a `RwLock` as the Python binding does.

use crate::batch::{self, BatchInfo, DecodeError, NewRecord, OffsetMode};
use crate::error::{Error, Result};
use crate::segment::{self, FileSlice, Segment, Truncation};
use std::fs::{self, File, OpenOptions};
use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const CHECKPOINT_FILE: &str = "partition.checkpoint";
pub const LOCK_FILE: &str = ".lock";
const CHECKPOINT_HEADER: &str = "tidelog-partition-checkpoint 1";

/// Kafka-named settings of one log; `None` means "never" for the flush policy, -1 means
/// "unlimited" for retention.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `segment.index.bytes`
    pub segment_index_bytes: usize,
    /// `index.interval.bytes`
    pub index_interval_bytes: u64,
    /// `flush.messages`
    pub flush_messages: Option<u64>,
    /// `flush.ms`
    pub flush_ms: Option<i64>,
    /// `retention.bytes`
    pub retention_bytes: i64,
    /// `retention.ms`
    pub retention_ms: i64,
    /// `max.message.bytes` (the largest batch accepted)
    pub max_message_bytes: u64,
    /// `message.timestamp.type` = LogAppendTime
    pub log_append_time: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_index_bytes: 10 << 20,
            index_interval_bytes: 4096,
            flush_messages: None,
            flush_ms: None,
            retention_bytes: -1,
            retention_ms: -1,
            max_message_bytes: 1_048_588,
            log_append_time: false,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.into(),
            })
        };
        if self.segment_bytes < 14 || self.segment_bytes > i32::MAX as u64 {
            return bad("segment.bytes", "must be between 14 and 2147483647");
        }
        if self.segment_ms < 1 {
            return bad("segment.ms", "must be at least 1");
        }
        if self.segment_index_bytes < 8 || self.segment_index_bytes > i32::MAX as usize {
            return bad("segment.index.bytes", "must be between 8 and 2147483647");
        }
        if self.flush_messages == Some(0) {
            return bad("flush.messages", "must be at least 1");
        }
        if self.flush_ms.is_some_and(|v| v < 0) {
            return bad("flush.ms", "must not be negative");
        }
        if self.retention_bytes < -1 {
            return bad("retention.bytes", "must be -1 (unlimited) or more");
        }
        if self.retention_ms < -1 {
            return bad("retention.ms", "must be -1 (unlimited) or more");
        }
        if self.max_message_bytes < batch::HEADER_LEN as u64
            || self.max_message_bytes > i32::MAX as u64
        {
            return bad("max.message.bytes", "must be between 61 and 2147483647");
        }
        Ok(())
    }
}

/// What opening the log found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub clean_shutdown: bool,
    pub segments_recovered: usize,
    pub bytes_truncated: u64,
    /// Each cut, in segment order.
    pub truncations: Vec<Truncation>,
    /// Set when damage took the log end below the checkpointed recovery point: the log
    /// resumes at that offset instead of reusing offsets already handed out.
    pub next_offset_raised_to: Option<i64>,
}

/// The outcome of an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// The stamped time under LogAppendTime, else -1.
    pub log_append_time: i64,
    pub record_count: i64,
    pub batches: Vec<BatchInfo>,
}

/// Bytes read, the batches in them (positions relative to the bytes), and where they lie.
pub type BatchRead = (Vec<u8>, Vec<BatchInfo>, FileSlice);

pub(crate) fn decode_error(path: &Path, position: u64, e: DecodeError) -> Error {
    match e {
        DecodeError::Corrupt(reason) => Error::corrupt_segment(path, position, reason),
        DecodeError::UnsupportedCompression(codec) => Error::UnsupportedCompression { codec },
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `contents` to `dir/name` atomically and durably: temp file, fsync, rename, fsync dir.
pub fn write_file_atomic(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(contents)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(|e| Error::io("rename", &dst, e))?;
    sync_dir(dir)
}

struct Checkpoint {
    log_start_offset: i64,
    recovery_point: i64,
    clean: bool,
}

fn read_checkpoint(dir: &Path) -> Option<Checkpoint> {
    let text = fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != CHECKPOINT_HEADER {
        return None;
    }
    let mut field = |name: &str| -> Option<i64> {
        let line = lines.next()?;
        line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()
    };
    let log_start_offset = field("log_start_offset")?;
    let recovery_point = field("recovery_point")?;
    let clean = field("clean_shutdown")?;
    Some(Checkpoint {
        log_start_offset,
        recovery_point,
        clean: clean == 1,
    })
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    segments: Vec<Segment>,
    log_start_offset: i64,
    recovery_point: i64,
    unflushed_messages: u64,
    last_flush_ms: i64,
    /// Held (with an exclusive lock) from open until close.
    lock: Option<File>,
    closed: Option<String>,
    recovery: RecoveryReport,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering it after an unclean shutdown.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log> {
        config.validate()?;
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        let checkpoint = read_checkpoint(dir);
        let mut report = RecoveryReport {
            clean_shutdown: checkpoint.as_ref().is_some_and(|c| c.clean),
            ..Default::default()
        };

        let bases = Self::list_segments(dir)?;
        let mut log_start_offset = checkpoint.as_ref().map_or(0, |c| c.log_start_offset).max(0);
        let recovery_point = match &checkpoint {
            Some(c) if c.clean => i64::MAX,
            Some(c) => c.recovery_point,
            None => i64::MIN,
        };
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let last = bases.len().saturating_sub(1);
        for (i, &base) in bases.iter().enumerate() {
            let prealloc = (i == last).then_some(config.segment_index_bytes);
            let opened = Segment::open(dir, base, config.index_interval_bytes, prealloc, now_ms)?;
            let mut seg = opened.segment;
            let next_base = bases.get(i + 1).copied().unwrap_or(i64::MAX);
            // Segments holding offsets at or after the recovery point may hold unflushed data.
            let must_scan = next_base > recovery_point || opened.indexes_suspect || !seg.load()?;
            if must_scan {
                report.segments_recovered += 1;
                if i != last {
                    // Rebuilt indexes need room; trimmed again below.
                    seg.make_active(config.segment_index_bytes)?;
                }
                if let Some(cut) = seg.recover()? {
                    report.bytes_truncated += cut.bytes;
                    report.truncations.push(cut);
                }
                if i != last {
                    seg.make_inactive()?;
                }
            }
            if i != last {
                seg.release_file();
            }
            // A damaged segment loses only its own invalid tail: later segments are kept, each
            // checked on its own, and reads step over the gap (as over a compacted range).
            segments.push(seg);
        }
        if segments.is_empty() {
            let seg = Segment::open(
                dir,
                log_start_offset,
                config.index_interval_bytes,
                Some(config.segment_index_bytes),
                now_ms,
            )?;
            segments.push(seg.segment);
            sync_dir(dir)?;
        }
        log_start_offset = log_start_offset.max(segments[0].base_offset());
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            recovery_point: 0,
            unflushed_messages: 0,
            last_flush_ms: now_ms,
            lock: Some(lock),
            closed: None,
            recovery: report,
        };
        // Offsets below the checkpointed recovery point were on disk and may have been handed
        // to clients: if damage took the log end below it, the log resumes there, so no offset
        // is ever given out twice.
        let durable_end = checkpoint.as_ref().map_or(0, |c| c.recovery_point);
        if log.end_offset() < durable_end {
            if log.active().size() > 0 {
                log.segments.last_mut().expect("active").make_inactive()?;
            } else {
                log.segments.pop().expect("active").delete()?;
            }
            log.push_active_segment(durable_end, now_ms)?;
            log.recovery.next_offset_raised_to = Some(durable_end);
        }
        log.log_start_offset = log.log_start_offset.min(log.end_offset());
        if log.recovery.segments_recovered > 0 {
            log.active().flush()?;
        }
        log.recovery_point = log.end_offset();
        log.delete_segments_below_start()?;
        log.write_checkpoint(false)?;
        Ok(log)
    }

    fn list_segments(dir: &Path) -> Result<Vec<i64>> {
        let mut bases = Vec::new();
        let mut orphans = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))? {
            let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((stem, ext)) = name.split_once('.') else {
                continue;
            };
            if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
                if name.ends_with(".tmp") {
                    orphans.push(entry.path());
                }
                continue;
            }
            let Ok(base) = stem.parse::<i64>() else {
                continue;
            };
            match ext {
                "log" => bases.push(base),
                "index" | "timeindex" if !dir.join(segment::file_name(base, ".log")).exists() => {
                    orphans.push(entry.path());
                }
                _ => {}
            }
        }
        for path in orphans {
            fs::remove_file(&path).map_err(|e| Error::io("remove orphan file", &path, e))?;
        }
        bases.sort_unstable();
        Ok(bases)
    }

    fn write_checkpoint(&self, clean: bool) -> Result<()> {
        let text = format!(
            "{CHECKPOINT_HEADER}\nlog_start_offset {}\nrecovery_point {}\nclean_shutdown {}\n",
            self.log_start_offset,
            self.recovery_point,
            u8::from(clean)
        );
        write_file_atomic(&self.dir, CHECKPOINT_FILE, text.as_bytes())
    }

    fn check_open(&self) -> Result<()> {
        match &self.closed {
            Some(reason) => Err(Error::Closed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Marks the log unusable after a failure that left its files in doubt.
    fn fail(&mut self, err: Error) -> Error {
        if let Error::Closed { reason } = &err {
            self.closed = Some(reason.clone());
        }
        err
    }

    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    /// Applies changed settings, as Kafka's `updateConfig`: size limits, retention and the
    /// roll policy at once; index sizes with the next segment. Nothing is reopened.
    pub fn reconfigure(&mut self, config: LogConfig) -> Result<()> {
        self.check_open()?;
        config.validate()?;
        self.config = config;
        Ok(())
    }
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }
    pub fn start_offset(&self) -> i64 {
        self.log_start_offset
    }
    pub fn end_offset(&self) -> i64 {
        self.active().next_offset()
    }
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }
    /// Bytes in the active segment (a roll comes when an append would pass `segment.bytes`).
    pub fn active_segment_bytes(&self) -> u64 {
        self.active().size()
    }
    /// The largest record timestamp in the log (-1 when empty).
    pub fn max_timestamp(&self) -> i64 {
        self.segments
            .iter()
            .map(Segment::max_timestamp)
            .max()
            .unwrap_or(-1)
    }
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(Segment::base_offset).collect()
    }
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Validates `data` (concatenated batches), assigns offsets unless `keep_offsets`, and
    /// appends it in one vectored write: patched headers from here, record bytes straight from
    /// `data` (never copied).
    pub fn append_batches(
        &mut self,
        data: &[u8],
        keep_offsets: bool,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.check_open()?;
        if keep_offsets {
            let mode = OffsetMode::Keep {
                next_offset: self.end_offset(),
            };
            let infos = batch::validate_batches(data, self.config.max_message_bytes, mode)?;
            return self.append_validated(&mut [IoSlice::new(data)], infos, now_ms, -1);
        }
        let mut infos =
            batch::validate_batches(data, self.config.max_message_bytes, OffsetMode::Assign)?;
        let lat = self.config.log_append_time.then_some(now_ms);
        batch::assign(&mut infos, self.end_offset(), leader_epoch, lat);
        let heads: Vec<[u8; batch::HEADER_LEN]> = infos
            .iter()
            .map(|i| {
                batch::patched_head(
                    &data[i.position as usize..(i.position + u64::from(i.size)) as usize],
                    i,
                )
            })
            .collect();
        let mut parts = Vec::with_capacity(infos.len() * 2);
        for (info, head) in infos.iter().zip(&heads) {
            let body = &data[info.position as usize + batch::HEADER_LEN
                ..(info.position + u64::from(info.size)) as usize];
            parts.push(IoSlice::new(head));
            parts.push(IoSlice::new(body));
        }
        self.append_validated(&mut parts, infos, now_ms, lat.unwrap_or(-1))
    }

    /// Builds one uncompressed batch from `records` and appends it.
    pub fn append_records(
        &mut self,
        records: &[NewRecord<'_>],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        let (mut buf, info) = batch::build_batch(records);
        self.append_built(&mut buf, info, leader_epoch, now_ms)
    }

    /// Appends one batch made by `batch::build_batch` (so known valid), assigning its offset.
    pub fn append_built(
        &mut self,
        buf: &mut [u8],
        info: BatchInfo,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.check_open()?;
        if u64::from(info.size) > self.config.max_message_bytes {
            return Err(Error::RecordTooLarge {
                size: u64::from(info.size),
                max_size: self.config.max_message_bytes,
            });
        }
        let mut infos = [info];
        let lat = self.config.log_append_time.then_some(now_ms);
        batch::assign_offsets(buf, &mut infos, self.end_offset(), leader_epoch, lat);
        self.append_validated(
            &mut [IoSlice::new(buf)],
            infos.to_vec(),
            now_ms,
            lat.unwrap_or(-1),
        )
    }

    fn append_validated(
        &mut self,
        parts: &mut [IoSlice<'_>],
        infos: Vec<BatchInfo>,
        now_ms: i64,
        log_append_time: i64,
    ) -> Result<AppendInfo> {
        let first = infos.first().expect("validated input has a batch");
        let last = infos.last().expect("validated input has a batch");
        let (first_offset, last_offset) = (first.base_offset, last.last_offset());
        let max_timestamp = infos.iter().map(|b| b.max_timestamp).max().unwrap_or(-1);
        let record_count = last_offset - first_offset + 1;
        let bytes: u64 = infos.iter().map(|b| u64::from(b.size)).sum();
        if self.active().should_roll(
            bytes,
            last_offset,
            self.config.segment_bytes,
            self.config.segment_ms,
            now_ms,
        ) {
            self.roll(now_ms)?;
        }
        let active = self.segments.last_mut().expect("active segment");
        if let Err(e) = active.append(parts, &infos) {
            return Err(self.fail(e));
        }
        self.unflushed_messages += record_count as u64;
        let due_by_count = self
            .config
            .flush_messages
            .is_some_and(|n| self.unflushed_messages >= n);
        let due_by_time = self
            .config
            .flush_ms
            .is_some_and(|ms| now_ms - self.last_flush_ms >= ms);
        if due_by_count || due_by_time {
            self.flush(now_ms)?;
        }
        Ok(AppendInfo {
            first_offset,
            last_offset,
            max_timestamp,
            log_append_time,
            record_count,
            batches: infos,
        })
    }

    /// Creates the segment at `base` as the new active one (its files made durable in the
    /// directory).
    fn push_active_segment(&mut self, base: i64, now_ms: i64) -> Result<()> {
        let opened = Segment::open(
            &self.dir,
            base,
            self.config.index_interval_bytes,
            Some(self.config.segment_index_bytes),
            now_ms,
        )?;
        self.segments.push(opened.segment);
        sync_dir(&self.dir)
    }

    /// Starts a new active segment at the log end offset (no-op if the active one is empty).
    pub fn roll(&mut self, now_ms: i64) -> Result<()> {
        self.check_open()?;
        if self.active().size() == 0 {
            return Ok(());
        }
        let base = self.end_offset();
        let old = self.segments.last_mut().expect("active segment");
        old.make_inactive().map_err(|e| self.fail(e))?;
        self.push_active_segment(base, now_ms)?;
        self.recovery_point = base;
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        self.write_checkpoint(false)?;
        self.apply_retention(now_ms)?;
        Ok(())
    }

    /// fsyncs the active segment's data; the recovery point becomes the LEO.
    pub fn flush(&mut self, now_ms: i64) -> Result<()> {
        let (file, end) = self.flush_target()?;
        let synced = file
            .sync_data()
            .map_err(|e| Error::io("fsync segment", self.active().log_path(), e));
        self.flushed(end, synced, now_ms)
    }

    /// What `flush` syncs: the active segment's file and the offset it covers. With
    /// `flushed`, lets a caller fsync without holding the log's lock.
    pub fn flush_target(&self) -> Result<(Arc<File>, i64)> {
        self.check_open()?;
        Ok((self.active().file()?, self.end_offset()))
    }

    /// Records the outcome of syncing `flush_target`: the recovery point advances to `end`
    /// (a roll in between already flushed the segment), or, after a failed fsync, the log
    /// refuses further use because the page cache state is unknown.
    pub fn flushed(&mut self, end: i64, synced: Result<()>, now_ms: i64) -> Result<()> {
        if let Err(e) = synced {
            self.closed = Some(format!("flush failed: {e}"));
            return Err(e);
        }
        self.recovery_point = self.recovery_point.max(end.min(self.end_offset()));
        self.unflushed_messages = 0;
        self.last_flush_ms = now_ms;
        Ok(())
    }

    fn check_range(&self, offset: i64) -> Result<()> {
        if offset < self.log_start_offset || offset > self.end_offset() {
            return Err(Error::OffsetOutOfRange {
                offset,
                start_offset: self.log_start_offset,
                end_offset: self.end_offset(),
            });
        }
        Ok(())
    }

    /// Where a read of `offset` starts scanning: (segment base offset, index entry offset,
    /// position), from the in-memory indexes alone.
    pub fn index_lookup(&self, offset: i64) -> Result<(i64, i64, u32)> {
        self.check_open()?;
        self.check_range(offset)?;
        let seg = &self.segments[self.segment_index_for(offset)];
        let (entry, position) = seg.index_lookup(offset);
        Ok((seg.base_offset(), entry, position))
    }

    fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    /// The segment and batch holding `offset` (None at the log end offset).
    fn locate(&self, offset: i64) -> Result<Option<(&Segment, BatchInfo)>> {
        self.check_open()?;
        self.check_range(offset)?;
        let idx = self
            .segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1);
        for seg in &self.segments[idx..] {
            if let Some(info) = seg.find_batch(offset)? {
                return Ok(Some((seg, info)));
            }
        }
        Ok(None)
    }

    /// The file range of whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` (at least one batch), from one segment; None at the log end offset.
    /// Read it (outside any lock) with `FileSlice::read_batches`, which checks every CRC.
    pub fn batch_range(&self, offset: i64, max_bytes: u64) -> Result<Option<FileSlice>> {
        match self.locate(offset)? {
            None => Ok(None),
            Some((seg, info)) => seg.batch_range(info.position, max_bytes).map(Some),
        }
    }

    /// Whole, CRC-checked batches starting with the one that holds `offset`, up to `max_bytes`
    /// (at least one batch), from one segment. Empty at the log end offset.
    /// Batch positions are relative to the returned bytes; the range says where they lie.
    pub fn read_batches(&self, offset: i64, max_bytes: u64) -> Result<Option<BatchRead>> {
        match self.batch_range(offset, max_bytes)? {
            None => Ok(None),
            Some(range) => {
                let (buf, infos) = range.read_batches()?;
                Ok(Some((buf, infos, range)))
            }
        }
    }

    /// The file range a fetch at `offset` sends, of batches wholly below `max_offset` when
    /// given (None at the log end offset, or when no whole batch lies below the bound).
    pub fn slice(
        &self,
        offset: i64,
        max_bytes: u64,
        max_offset: Option<i64>,
    ) -> Result<Option<FileSlice>> {
        let Some((seg, info)) = self.locate(offset)? else {
            return Ok(None);
        };
        // A bound below the log end (a leader's high watermark) ends the range where the
        // batch holding it starts, if that batch is in this segment.
        let end = match max_offset {
            Some(bound) if bound < self.end_offset() => match self.locate(bound.max(offset))? {
                Some((s, b)) if s.base_offset() == seg.base_offset() => Some(b.position),
                _ => None,
            },
            _ => None,
        };
        if end.is_some_and(|e| e <= info.position) {
            return Ok(None);
        }
        seg.slice(info.position, max_bytes, end).map(Some)
    }

    /// The first record with timestamp >= `timestamp`, as (offset, timestamp).
    pub fn offset_for_time(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        self.check_open()?;
        for seg in &self.segments {
            if seg.next_offset() <= self.log_start_offset {
                continue;
            }
            if let Some(found) = seg.offset_for_time(timestamp, self.log_start_offset)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Removes every record at or after `offset`, at batch granularity: the batch holding
    /// `offset` goes too. Below the log start offset the log is emptied and restarts at `offset`.
    pub fn truncate_to(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        self.check_open()?;
        if offset >= self.end_offset() {
            return Ok(());
        }
        // The checkpoint is lowered to the new end first: a crash mid-way must not make the
        // next open take the cut offsets for lost durable ones (and skip past them).
        let new_end = match self.locate(offset.max(self.log_start_offset))? {
            Some((_, info)) if offset >= self.log_start_offset => info.base_offset,
            _ => offset,
        };
        self.recovery_point = self.recovery_point.min(new_end);
        self.write_checkpoint(false)?;
        if offset < self.log_start_offset {
            self.restart_at(offset, now_ms)?;
        } else {
            while self.segments.len() > 1 && self.active().base_offset() > offset {
                self.segments.pop().expect("checked").delete()?;
            }
            let active = self.segments.last_mut().expect("active segment");
            active.truncate_to(offset).map_err(|e| self.fail(e))?;
            let active = self.segments.last_mut().expect("active segment");
            active.make_active(self.config.segment_index_bytes)?;
            self.active().flush()?;
            self.log_start_offset = self.log_start_offset.min(self.end_offset());
        }
        self.recovery_point = self.recovery_point.min(self.end_offset());
        self.write_checkpoint(false)
    }

    /// Empties the log and restarts it at `offset` (Kafka's truncateFullyAndStartAt): what a
    /// follower does when its leader's log starts past this log's end, so that it can copy
    /// the leader from there. The checkpoint says so before any segment goes, so a crash
    /// mid-way never reopens the log below `offset`.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        self.check_open()?;
        self.recovery_point = offset;
        self.log_start_offset = offset;
        self.write_checkpoint(false)?;
        self.restart_at(offset, now_ms)?;
        self.write_checkpoint(false)
    }

    /// Deletes every segment and starts an empty active one at `offset`.
    fn restart_at(&mut self, offset: i64, now_ms: i64) -> Result<()> {
        for seg in self.segments.drain(..) {
            seg.delete()?;
        }
        self.push_active_segment(offset, now_ms)?;
        self.log_start_offset = offset;
        Ok(())
    }

    /// Advances the log start offset to `offset`; records below it are no longer readable and
    /// whole segments below it are deleted.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<()> {
        self.check_open()?;
        if offset > self.end_offset() {
            return Err(Error::OffsetOutOfRange {
                offset,
                start_offset: self.log_start_offset,
                end_offset: self.end_offset(),
            });
        }
        if offset <= self.log_start_offset {
            return Ok(());
        }
        self.log_start_offset = offset;
        self.write_checkpoint(false)?;
        self.delete_segments_below_start()?;
        Ok(())
    }

    fn delete_segments_below_start(&mut self) -> Result<usize> {
        let mut n = 0;
        while self.segments.len() > 1 && self.segments[1].base_offset() <= self.log_start_offset {
            self.segments.remove(0).delete()?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes whole inactive segments, oldest first, past `retention.ms` (by their largest
    /// timestamp) or beyond `retention.bytes`. Returns how many were deleted.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<usize> {
        self.check_open()?;
        let mut doomed = 0usize;
        let inactive = self.segments.len() - 1;
        if self.config.retention_ms >= 0 {
            while doomed < inactive
                && now_ms - self.segments[doomed].max_timestamp() > self.config.retention_ms
            {
                doomed += 1;
            }
        }
        if self.config.retention_bytes >= 0 {
            let mut excess = self.size_bytes() as i64 - self.config.retention_bytes;
            for seg in &self.segments[..doomed] {
                excess -= seg.size() as i64;
            }
            while doomed < inactive && excess - self.segments[doomed].size() as i64 >= 0 {
                excess -= self.segments[doomed].size() as i64;
                doomed += 1;
            }
        }
        if doomed == 0 {
            return Ok(0);
        }
        self.log_start_offset = self
            .log_start_offset
            .max(self.segments[doomed].base_offset());
        self.write_checkpoint(false)?;
        self.delete_segments_below_start()
    }

    /// Flushes everything, trims the active indexes and records a clean shutdown.
    pub fn close(&mut self) -> Result<()> {
        if self.closed.is_some() {
            return Ok(());
        }
        let active = self.segments.last_mut().expect("active segment");
        active.make_inactive()?;
        self.recovery_point = self.end_offset();
        self.write_checkpoint(true)?;
        self.closed = Some("closed".into());
        self.lock = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::NewRecord;

    fn rec(v: &[u8]) -> NewRecord<'_> {
        NewRecord {
            timestamp: 1,
            key: None,
            value: Some(v),
            headers: Vec::new(),
        }
    }

    fn small() -> LogConfig {
        LogConfig {
            segment_bytes: 400,
            index_interval_bytes: 64,
            segment_index_bytes: 4096,
            ..LogConfig::default()
        }
    }

    #[test]
    fn appends_roll_and_reopen_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small(), 0).unwrap();
        for i in 0..30u8 {
            let info = log.append_records(&[rec(&[i; 40])], 0, 0).unwrap();
            assert_eq!(info.first_offset, i64::from(i));
        }
        assert!(log.segment_base_offsets().len() > 3);
        log.close().unwrap();
        drop(log);
        let log = Log::open(dir.path(), small(), 0).unwrap();
        assert!(log.recovery_report().clean_shutdown);
        assert_eq!(log.end_offset(), 30);
        // A read returns batches from one segment; reading on from each end covers the log.
        let mut values = Vec::new();
        let mut next = 5;
        while next < log.end_offset() {
            let (buf, infos, _) = log.read_batches(next, 1 << 20).unwrap().unwrap();
            for info in &infos {
                let bytes = &buf[info.position as usize..][..info.size as usize];
                batch::for_each_record(bytes, info, next, |r| {
                    values.push((r.offset, r.value.unwrap()[0]));
                    true
                })
                .unwrap();
            }
            next = values.last().unwrap().0 + 1;
        }
        assert_eq!(values, (5..30).map(|i| (i, i as u8)).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_tail_is_cut_after_an_unclean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        for i in 0..5u8 {
            log.append_records(&[rec(&[i; 10])], 0, 0).unwrap();
        }
        log.flush(0).unwrap();
        drop(log); // no close: an unclean stop
        let seg = dir.path().join("00000000000000000000.log");
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut log = Log::open(dir.path(), LogConfig::default(), 0).unwrap();
        let report = log.recovery_report().clone();
        assert!(!report.clean_shutdown && report.bytes_truncated > 0);
        assert_eq!(log.end_offset(), 4);
        assert_eq!(
            log.append_records(&[rec(b"again")], 0, 0)
                .unwrap()
                .first_offset,
            4
        );
    }

    #[test]
    fn truncate_and_delete_records_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small(), 0).unwrap();
        for i in 0..20u8 {
            log.append_records(&[rec(&[i; 40]), rec(&[i; 40])], 0, 0)
                .unwrap();
        }
        log.truncate_to(15, 0).unwrap();
        assert_eq!(log.end_offset(), 14); // the batch holding 15 (14-15) goes too
        log.delete_records_before(10).unwrap();
        assert_eq!(log.start_offset(), 10);
        assert!(matches!(
            log.read_batches(9, 100),
            Err(Error::OffsetOutOfRange {
                start_offset: 10,
                ..
            })
        ));
        assert!(matches!(
            log.delete_records_before(99),
            Err(Error::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn a_damaged_inactive_segment_loses_only_its_tail_and_indexes_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), small(), 0).unwrap();
        for i in 0..30u8 {
            log.append_records(&[rec(&[i; 40])], 0, 0).unwrap();
        }
        log.close().unwrap();
        drop(log);
        let bases: Vec<i64> = {
            let log = Log::open(dir.path(), small(), 0).unwrap();
            log.segment_base_offsets()
        };
        // Cut the second segment's last batch short and delete every inactive index.
        let victim = dir.path().join(segment::file_name(bases[1], ".log"));
        let len = fs::metadata(&victim).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&victim)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        for &b in &bases[..bases.len() - 1] {
            fs::remove_file(dir.path().join(segment::file_name(b, ".index"))).unwrap();
        }
        fs::remove_file(dir.path().join(CHECKPOINT_FILE)).unwrap();
        let log = Log::open(dir.path(), small(), 0).unwrap();
        let report = log.recovery_report();
        assert_eq!(report.truncations.len(), 1);
        assert_eq!(report.truncations[0].segment, bases[1]);
        assert_eq!(log.segment_base_offsets(), bases);
        assert_eq!(log.end_offset(), 30);
        let lost = bases[2] - 1; // the last batch of the damaged segment
        let (_, infos, _) = log.read_batches(lost, 1 << 20).unwrap().unwrap();
        assert_eq!(infos[0].base_offset, bases[2]);
    }
}
