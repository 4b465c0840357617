//! Sparse offset index (`.index`, 8-byte entries: relative offset u32, position u32) and time
//! index (`.timeindex`, 12-byte entries: timestamp i64, relative offset u32), big-endian as in
//! Kafka. The files are memory-mapped; an active segment's index is preallocated to
//! `segment.index.bytes` and trimmed to its entries when the segment stops being active.
//! Indexes carry no checksum: recovery rebuilds them, and `sanity_check` rejects a damaged one.
//!
//! Not thread-safe on its own: the owning `Log` serialises writers and readers.

use crate::error::{Error, Result};
use memmap2::{MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub const OFFSET_ENTRY: usize = 8;
pub const TIME_ENTRY: usize = 12;

/// A file of fixed-size entries, mapped into memory; both indexes deref to it for the
/// operations they share.
pub struct MappedEntries {
    path: PathBuf,
    /// Open while the index can change size (the active segment's); closed once trimmed, so an
    /// inactive segment's indexes cost no descriptor (the map stays valid without it).
    file: Option<File>,
    map: Option<MmapMut>,
    entry_size: usize,
    entries: usize,
    capacity: usize,
}

impl MappedEntries {
    /// Opens (creating if missing) the file. With `preallocate`, the file is grown to that many
    /// bytes (rounded down to whole entries) so appends need no remap; the caller decides how
    /// many existing entries are valid via `entries_in_file` / `truncate_entries`.
    fn open(path: &Path, entry_size: usize, preallocate: Option<usize>) -> Result<(Self, usize)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("open index", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat index", path, e))?
            .len() as usize;
        let existing = len / entry_size;
        let mut me = MappedEntries {
            path: path.to_path_buf(),
            file: Some(file),
            map: None,
            entry_size,
            entries: existing,
            capacity: existing,
        };
        match preallocate {
            Some(bytes) => me.resize(bytes.max(len - len % entry_size))?,
            None => {
                me.resize(existing * entry_size)?;
                me.file = None;
            }
        }
        Ok((me, existing))
    }

    /// The index file, reopened if it was closed when the segment stopped being active.
    fn file(&mut self) -> Result<&File> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(|e| Error::io("open index", &self.path, e))?;
            self.file = Some(file);
        }
        Ok(self.file.as_ref().expect("just opened"))
    }

    fn resize(&mut self, bytes: usize) -> Result<()> {
        let bytes = bytes - bytes % self.entry_size;
        self.map = None;
        let path = self.path.clone();
        let file = self.file()?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat index", &path, e))?
            .len();
        if bytes as u64 > len {
            allocate(file, len, bytes as u64 - len)
        } else {
            file.set_len(bytes as u64)
        }
        .map_err(|e| Error::io("resize index", &path, e))?;
        let map = if bytes > 0 {
            // SAFETY: the file is opened read-write by this process only (the log directory is
            // locked with flock, so no other tidelog process maps or truncates it), its length was
            // just set to `bytes`, and the map is dropped before any later resize or truncation.
            // Closing the descriptor later (see `file`) leaves the mapping valid (POSIX mmap).
            let map = unsafe { MmapOptions::new().len(bytes).map_mut(file) }
                .map_err(|e| Error::io("mmap index", &path, e))?;
            Some(map)
        } else {
            None
        };
        self.map = map;
        self.capacity = bytes / self.entry_size;
        self.entries = self.entries.min(self.capacity);
        Ok(())
    }

    fn entry(&self, i: usize) -> &[u8] {
        let map = self.map.as_ref().expect("entry of an empty index");
        &map[i * self.entry_size..(i + 1) * self.entry_size]
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    pub fn set_entries(&mut self, n: usize) {
        self.entries = n.min(self.capacity);
    }

    pub fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Grows the file back to `bytes` (whole entries, never below the entries held).
    pub fn preallocate(&mut self, bytes: usize) -> Result<()> {
        self.resize(bytes.max(self.entries * self.entry_size))
    }

    fn push(&mut self, bytes: &[u8]) {
        debug_assert_eq!(bytes.len(), self.entry_size);
        let at = self.entries * self.entry_size;
        let map = self.map.as_mut().expect("push into a full index");
        map[at..at + self.entry_size].copy_from_slice(bytes);
        self.entries += 1;
    }

    /// Greatest entry index `i` with `key(i) <= target`.
    fn floor(&self, target: i64, key: impl Fn(&[u8]) -> i64) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if key(self.entry(mid)) <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    pub fn flush(&self) -> Result<()> {
        if let Some(map) = &self.map {
            map.flush()
                .map_err(|e| Error::io("msync index", &self.path, e))?;
        }
        Ok(())
    }

    /// Cuts the file to its entries and makes it durable (when a segment stops being active),
    /// then closes it: the map serves lookups from now on.
    pub fn trim(&mut self) -> Result<()> {
        self.flush()?;
        self.resize(self.entries * self.entry_size)?;
        let path = self.path.clone();
        self.file()?
            .sync_all()
            .map_err(|e| Error::io("fsync index", &path, e))?;
        self.file = None;
        Ok(())
    }
}

/// Reserves disk blocks for `[offset, offset + len)`, growing the file, so that writes
/// through the map cannot fail later: a full disk is this call's ENOSPC, never a SIGBUS at
/// the first touch of a sparse page. `posix_fallocate` on Linux, else (or where the
/// filesystem lacks it) zeros written.
fn allocate(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(start), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(std::io::Error::from_raw_os_error(libc::EFBIG));
        };
        // SAFETY: posix_fallocate takes no pointers, only the descriptor, which `file` keeps
        // open for the duration of the call. It returns the error number (errno is not set).
        match unsafe { libc::posix_fallocate(file.as_raw_fd(), start, n) } {
            0 => return Ok(()),
            libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS => {}
            errno => return Err(std::io::Error::from_raw_os_error(errno)),
        }
    }
    write_zeros(file, offset, len)
}

fn write_zeros(file: &File, mut offset: u64, len: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; len.min(1 << 16) as usize];
    let end = offset + len;
    while offset < end {
        let n = (end - offset).min(zeros.len() as u64) as usize;
        match crate::segment::write_at(file, &zeros[..n], offset)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            written => offset += written as u64,
        }
    }
    Ok(())
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Offset index: entry (relative last offset of a batch, position of the batch's start).
pub struct OffsetIndex {
    inner: MappedEntries,
    base_offset: i64,
}

impl OffsetIndex {
    /// Opens the index; returns it and how many entries the file held.
    pub fn open(
        path: &Path,
        base_offset: i64,
        preallocate: Option<usize>,
    ) -> Result<(Self, usize)> {
        let (inner, existing) = MappedEntries::open(path, OFFSET_ENTRY, preallocate)?;
        Ok((OffsetIndex { inner, base_offset }, existing))
    }

    pub fn get(&self, i: usize) -> (i64, u32) {
        let e = self.inner.entry(i);
        (self.base_offset + i64::from(be_u32(e, 0)), be_u32(e, 4))
    }

    pub fn append(&mut self, offset: i64, position: u32) {
        let rel = (offset - self.base_offset) as u32;
        let mut e = [0u8; OFFSET_ENTRY];
        e[..4].copy_from_slice(&rel.to_be_bytes());
        e[4..].copy_from_slice(&position.to_be_bytes());
        self.inner.push(&e);
    }

    /// The greatest entry with offset <= target, or (base offset, 0).
    pub fn lookup(&self, target: i64) -> (i64, u32) {
        let rel = target - self.base_offset;
        match self.inner.floor(rel, |e| i64::from(be_u32(e, 0))) {
            Some(i) => self.get(i),
            None => (self.base_offset, 0),
        }
    }

    /// The greatest entry position <= `position` (0 if none): a batch start.
    pub fn floor_position(&self, position: u64) -> u32 {
        match self.inner.floor(position.min(i64::MAX as u64) as i64, |e| {
            i64::from(be_u32(e, 4))
        }) {
            Some(i) => self.get(i).1,
            None => 0,
        }
    }

    /// Removes entries with offset >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) {
        let keep = match self
            .inner
            .floor(offset - self.base_offset - 1, |e| i64::from(be_u32(e, 0)))
        {
            Some(i) => i + 1,
            None => 0,
        };
        self.inner.entries = keep.min(self.inner.entries);
    }

    /// True when offsets and positions strictly increase and every position lies inside the log.
    pub fn sanity_check(&self, log_size: u64) -> bool {
        let mut prev: Option<(i64, u32)> = None;
        for i in 0..self.entries() {
            let (o, p) = self.get(i);
            if u64::from(p) >= log_size.max(1) || prev.is_some_and(|(po, pp)| o <= po || p <= pp) {
                return false;
            }
            prev = Some((o, p));
        }
        true
    }
}

impl std::ops::Deref for OffsetIndex {
    type Target = MappedEntries;
    fn deref(&self) -> &MappedEntries {
        &self.inner
    }
}

impl std::ops::DerefMut for OffsetIndex {
    fn deref_mut(&mut self) -> &mut MappedEntries {
        &mut self.inner
    }
}

impl std::ops::Deref for TimeIndex {
    type Target = MappedEntries;
    fn deref(&self) -> &MappedEntries {
        &self.inner
    }
}

impl std::ops::DerefMut for TimeIndex {
    fn deref_mut(&mut self) -> &mut MappedEntries {
        &mut self.inner
    }
}

/// Time index: entry (max timestamp so far, relative offset of the batch holding it).
pub struct TimeIndex {
    inner: MappedEntries,
    base_offset: i64,
}

impl TimeIndex {
    pub fn open(
        path: &Path,
        base_offset: i64,
        preallocate: Option<usize>,
    ) -> Result<(Self, usize)> {
        let (inner, existing) = MappedEntries::open(path, TIME_ENTRY, preallocate)?;
        Ok((TimeIndex { inner, base_offset }, existing))
    }

    pub fn get(&self, i: usize) -> (i64, i64) {
        let e = self.inner.entry(i);
        (be_i64(e, 0), self.base_offset + i64::from(be_u32(e, 8)))
    }

    pub fn last_entry(&self) -> Option<(i64, i64)> {
        self.entries().checked_sub(1).map(|i| self.get(i))
    }

    /// Appends (timestamp, offset) when the index has room and the timestamp is greater than the
    /// last entry's, an empty index counting as (-1, base offset): so, as Kafka's
    /// TimeIndex.maybeAppend, a segment without timestamps (an empty one) gets no entry.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        let last = self.last_entry().map_or(-1, |(ts, _)| ts);
        if self.is_full() || timestamp <= last {
            return;
        }
        let mut e = [0u8; TIME_ENTRY];
        e[..8].copy_from_slice(&timestamp.to_be_bytes());
        e[8..].copy_from_slice(&((offset - self.base_offset) as u32).to_be_bytes());
        self.inner.push(&e);
    }

    /// The greatest entry with timestamp <= target, as (timestamp, offset); else (-1, base offset).
    pub fn lookup(&self, timestamp: i64) -> (i64, i64) {
        match self.inner.floor(timestamp, |e| be_i64(e, 0)) {
            Some(i) => self.get(i),
            None => (-1, self.base_offset),
        }
    }

    /// Removes entries with offset >= `offset`.
    pub fn truncate_to(&mut self, offset: i64) {
        let mut keep = self.entries();
        while keep > 0 && self.get(keep - 1).1 >= offset {
            keep -= 1;
        }
        self.inner.entries = keep;
    }

    pub fn sanity_check(&self, next_offset: i64) -> bool {
        let mut prev: Option<(i64, i64)> = None;
        for i in 0..self.entries() {
            let (ts, o) = self.get(i);
            if o >= next_offset.max(self.base_offset + 1)
                || prev.is_some_and(|(pt, po)| ts <= pt || o < po)
            {
                return false;
            }
            prev = Some((ts, o));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_lookup_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let (mut idx, existing) = OffsetIndex::open(&path, 100, Some(1024)).unwrap();
        assert_eq!(existing, 0);
        for i in 0..10u32 {
            idx.append(100 + i64::from(i) * 10 + 9, i * 1000);
        }
        assert_eq!(idx.lookup(50), (100, 0));
        assert_eq!(idx.lookup(109), (109, 0));
        assert_eq!(idx.lookup(125), (119, 1000));
        assert_eq!(idx.lookup(10_000), (199, 9000));
        assert!(idx.sanity_check(10_000));
        assert!(!idx.sanity_check(9000));
        idx.truncate_to(130);
        assert_eq!(idx.entries(), 3);
        idx.trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        drop(idx);
        let (idx, existing) = OffsetIndex::open(&path, 100, None).unwrap();
        assert_eq!(existing, 3);
        assert_eq!(idx.lookup(125), (119, 1000));
    }

    #[test]
    fn time_index_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut idx, _) = TimeIndex::open(&dir.path().join("t.timeindex"), 0, Some(120)).unwrap();
        idx.maybe_append(10, 0);
        idx.maybe_append(10, 5);
        idx.maybe_append(20, 7);
        assert_eq!(idx.entries(), 2);
        assert_eq!(idx.lookup(15), (10, 0));
        assert_eq!(idx.lookup(5), (-1, 0));
        idx.truncate_to(7);
        assert_eq!(idx.last_entry(), Some((10, 0)));
    }
}
