//! RecordBatch v2: header view, validation of a buffer of concatenated batches, offset
//! assignment, building uncompressed batches and decoding records (all codecs).
//!
//! Layout (big-endian): baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 |
//! crc u32 | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//! producerId i64 | producerEpoch i16 | baseSequence i32 | recordsCount i32 | records.
//! The CRC-32C covers bytes 21..end, so rewriting the base offset or the leader epoch keeps it valid.
//!
//! Functions here are pure (no I/O) and thread-safe.

use crate::error::{Error, Result};
use std::io::Read;

/// Bytes before the batch length field's end: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 61;
pub const MAGIC: u8 = 2;
const CRC_OFFSET: usize = 17;
const CRC_START: usize = 21;
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;
const LEADER_EPOCH_OFFSET: usize = 12;

pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;

/// Upper bound on the decompressed size of one batch (guards against decompression bombs).
pub const MAX_DECOMPRESSED_BYTES: u64 = 256 << 20;

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];

/// CRC-32C (Castagnoli), hardware accelerated where the CPU has it.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

#[inline]
pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The header fields of one batch and where it lies in its buffer or file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte position of the batch in the buffer (or segment file) it was read from.
    pub position: u64,
    /// Whole batch size, LOG_OVERHEAD included.
    pub size: u32,
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchInfo {
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }
}

/// Outcome of reading one batch header.
#[derive(Debug)]
pub enum Header {
    Batch(BatchInfo),
    /// Fewer bytes remain than the header or the declared length needs (a torn tail).
    Incomplete,
    Invalid(String),
}

/// Reads the header of the batch at `pos` of `buf`, checking length and magic but not the CRC.
/// `file_position` is added to `pos` to record where the batch lies in its file.
pub fn parse_header(buf: &[u8], pos: usize, file_position: u64) -> Header {
    parse_header_only(buf, pos, file_position, false)
}

/// As `parse_header`; with `header_only`, needs just the fixed header's bytes, not the whole
/// batch (for scans that skip over batch bodies).
pub fn parse_header_only(buf: &[u8], pos: usize, file_position: u64, header_only: bool) -> Header {
    let rest = &buf[pos..];
    if rest.len() < LOG_OVERHEAD {
        return Header::Incomplete;
    }
    let length = be_i32(rest, 8);
    if length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Header::Invalid(format!(
            "batch length {length} is shorter than a batch header"
        ));
    }
    if rest.len() > 16 && rest[16] != MAGIC {
        return Header::Invalid(format!(
            "magic byte {} (only record format v2 is supported)",
            rest[16] as i8
        ));
    }
    let size = length as usize + LOG_OVERHEAD;
    if rest.len() < if header_only { HEADER_LEN } else { size } {
        return Header::Incomplete;
    }
    Header::Batch(BatchInfo {
        position: file_position + pos as u64,
        size: size as u32,
        base_offset: be_i64(rest, 0),
        partition_leader_epoch: be_i32(rest, 12),
        attributes: be_i16(rest, 21),
        last_offset_delta: be_i32(rest, 23),
        base_timestamp: be_i64(rest, 27),
        max_timestamp: be_i64(rest, 35),
        producer_id: be_i64(rest, 43),
        producer_epoch: be_i16(rest, 51),
        base_sequence: be_i32(rest, 53),
        records_count: be_i32(rest, 57),
    })
}

/// Checks what the header alone cannot: the CRC and the record count.
/// `batch` is exactly the batch's bytes.
pub fn check_batch(batch: &[u8], info: &BatchInfo) -> std::result::Result<(), String> {
    if info.last_offset_delta < 0
        || i64::from(info.last_offset_delta) + 1 != i64::from(info.records_count)
    {
        return Err(format!(
            "lastOffsetDelta {} does not match recordsCount {}",
            info.last_offset_delta, info.records_count
        ));
    }
    let stored = u32::from_be_bytes(batch[CRC_OFFSET..CRC_START].try_into().expect("4 bytes"));
    let computed = crc32c(&batch[CRC_START..]);
    if stored != computed {
        return Err(format!(
            "CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    Ok(())
}

/// How appended batches get their offsets.
#[derive(Clone, Copy, Debug)]
pub enum OffsetMode {
    /// The broker assigns offsets: every batch must carry base offset 0.
    Assign,
    /// The batches keep their own offsets (a replica's append), which must continue `next_offset`.
    Keep { next_offset: i64 },
}

/// Validates a buffer of concatenated batches: framing, magic, CRC, counts, size limit,
/// offsets, and every record (`validate_records`).
pub fn validate_batches(
    buf: &[u8],
    max_batch_size: u64,
    mode: OffsetMode,
) -> Result<Vec<BatchInfo>> {
    let mut batches = Vec::new();
    let mut pos = 0usize;
    let mut expected = match mode {
        OffsetMode::Keep { next_offset } => Some(next_offset),
        OffsetMode::Assign => None,
    };
    if buf.is_empty() {
        return Err(Error::corrupt_input(0, 0, "no record batch in the input"));
    }
    while pos < buf.len() {
        let index = batches.len();
        let info = match parse_header(buf, pos, 0) {
            Header::Batch(info) => info,
            Header::Incomplete => {
                return Err(Error::corrupt_input(
                    index,
                    pos,
                    "truncated batch: fewer bytes than its length field",
                ))
            }
            Header::Invalid(reason) => return Err(Error::corrupt_input(index, pos, reason)),
        };
        if u64::from(info.size) > max_batch_size {
            return Err(Error::RecordTooLarge {
                size: u64::from(info.size),
                max_size: max_batch_size,
            });
        }
        let bytes = &buf[pos..pos + info.size as usize];
        check_batch(bytes, &info).map_err(|reason| Error::corrupt_input(index, pos, reason))?;
        validate_records(bytes, &info).map_err(|e| match e {
            Ok(reason) => Error::InvalidRecord {
                batch_index: index,
                position: pos as u64,
                reason,
            },
            Err(DecodeError::Corrupt(reason)) => Error::corrupt_input(index, pos, reason),
            Err(DecodeError::UnsupportedCompression(codec)) => {
                Error::corrupt_input(index, pos, format!("unknown compression codec {codec}"))
            }
        })?;
        match expected {
            None if info.base_offset != 0 => {
                return Err(Error::corrupt_input(
                    index,
                    pos,
                    format!(
                        "base offset {} where the broker assigns offsets (expected 0)",
                        info.base_offset
                    ),
                ))
            }
            Some(next) if info.base_offset != next => {
                return Err(Error::InvalidAppendOffset {
                    expected: next,
                    actual: info.base_offset,
                })
            }
            Some(_) => expected = Some(info.next_offset()),
            None => {}
        }
        pos += info.size as usize;
        batches.push(info);
    }
    Ok(batches)
}

/// Gives validated batches consecutive offsets from `first_offset` and the partition leader
/// epoch; with `log_append_time`, also the LogAppendTime stamp. Only the facts change here:
/// `patched_head` makes the bytes to write, so the caller's buffer is never copied.
pub fn assign(
    batches: &mut [BatchInfo],
    first_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) {
    let mut next = first_offset;
    for info in batches.iter_mut() {
        info.base_offset = next;
        info.partition_leader_epoch = leader_epoch;
        if let Some(now) = log_append_time {
            info.attributes |= TIMESTAMP_TYPE_LOG_APPEND;
            info.max_timestamp = now;
        }
        next = info.next_offset();
    }
}

/// The first HEADER_LEN bytes of `batch` as they must be written for `info` (after `assign`):
/// base offset and leader epoch rewritten (outside the CRC); when `info` carries LogAppendTime
/// and the stored batch does not, attributes and maxTimestamp too, with the CRC recomputed
/// over the new header and the unchanged records.
pub fn patched_head(batch: &[u8], info: &BatchInfo) -> [u8; HEADER_LEN] {
    let mut head: [u8; HEADER_LEN] = batch[..HEADER_LEN]
        .try_into()
        .expect("a batch has a header");
    head[0..8].copy_from_slice(&info.base_offset.to_be_bytes());
    head[LEADER_EPOCH_OFFSET..LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&info.partition_leader_epoch.to_be_bytes());
    let stored_attributes = be_i16(batch, ATTRIBUTES_OFFSET);
    if stored_attributes != info.attributes
        || be_i64(batch, MAX_TIMESTAMP_OFFSET) != info.max_timestamp
    {
        head[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2]
            .copy_from_slice(&info.attributes.to_be_bytes());
        head[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8]
            .copy_from_slice(&info.max_timestamp.to_be_bytes());
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        digest.update(&head[CRC_START..]);
        digest.update(&batch[HEADER_LEN..]);
        let crc = digest.finalize() as u32;
        head[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
    }
    head
}

/// `assign` and `patched_head` applied in place, for a buffer the caller owns.
pub fn assign_offsets(
    buf: &mut [u8],
    batches: &mut [BatchInfo],
    first_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) {
    assign(batches, first_offset, leader_epoch, log_append_time);
    for info in batches.iter() {
        let start = info.position as usize;
        let batch = &mut buf[start..start + info.size as usize];
        let head = patched_head(batch, info);
        batch[..HEADER_LEN].copy_from_slice(&head);
    }
}

// ---- varints (zig-zag, as in Kafka's ByteUtils) ----

#[inline]
pub fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut u = ((v << 1) ^ (v >> 63)) as u64;
    while u >= 0x80 {
        out.push((u as u8) | 0x80);
        u >>= 7;
    }
    out.push(u as u8);
}

#[inline]
pub fn varlong_len(v: i64) -> usize {
    let u = ((v << 1) ^ (v >> 63)) as u64;
    let bits = 64 - (u | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Reads a zig-zag varlong; `None` if the buffer ends or the encoding exceeds 10 bytes.
/// Always inlined: record parsing calls it several times per record, and a call per
/// varint costs more than the decoding.
#[inline(always)]
pub fn get_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    // One or two bytes are the common cases (deltas, lengths below 8 KiB): no loop.
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(i64::from(first >> 1) ^ -i64::from(first & 1));
    }
    if let Some(&second) = buf.get(*pos + 1) {
        if second < 0x80 {
            *pos += 2;
            let u = i64::from(first & 0x7f) | (i64::from(second) << 7);
            return Some((u >> 1) ^ -(u & 1));
        }
    }
    let mut u: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        u |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((u >> 1) as i64) ^ -((u & 1) as i64));
        }
    }
    None
}

/// Reads a zig-zag varint that must fit an i32.
#[inline(always)]
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    let v = get_varlong(buf, pos)?;
    i32::try_from(v).ok()
}

// ---- building ----

/// One record to put into a new batch.
pub struct NewRecord<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

fn bytes_field_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varlong_len(b.len() as i64) + b.len(),
    }
}

fn put_bytes_field(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// Builds one uncompressed batch (base offset 0, leader epoch 0, no producer id), as Kafka's
/// MemoryRecordsBuilder would: baseTimestamp is the first record's timestamp.
/// Returns the bytes and the batch's header facts.
pub fn build_batch(records: &[NewRecord<'_>]) -> (Vec<u8>, BatchInfo) {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_ts = records[0].timestamp;
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(base_ts);
    let payload: usize = records
        .iter()
        .map(|r| {
            24 + r.key.map_or(0, <[u8]>::len)
                + r.value.map_or(0, <[u8]>::len)
                + r.headers.len() * 16
        })
        .sum();
    let mut out = Vec::with_capacity(HEADER_LEN + payload);
    out.resize(HEADER_LEN, 0);
    for (delta, r) in records.iter().enumerate() {
        let ts_delta = r.timestamp - base_ts;
        let mut body = 1 + varlong_len(ts_delta) + varlong_len(delta as i64);
        body += bytes_field_len(r.key) + bytes_field_len(r.value);
        body += varlong_len(r.headers.len() as i64);
        for (k, v) in &r.headers {
            body += bytes_field_len(Some(k)) + bytes_field_len(*v);
        }
        put_varlong(&mut out, body as i64);
        out.push(0);
        put_varlong(&mut out, ts_delta);
        put_varlong(&mut out, delta as i64);
        put_bytes_field(&mut out, r.key);
        put_bytes_field(&mut out, r.value);
        put_varlong(&mut out, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes_field(&mut out, Some(k));
            put_bytes_field(&mut out, *v);
        }
    }
    let info = BatchInfo {
        position: 0,
        size: out.len() as u32,
        base_offset: 0,
        partition_leader_epoch: 0,
        attributes: 0,
        last_offset_delta: (records.len() - 1) as i32,
        base_timestamp: base_ts,
        max_timestamp: max_ts,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: records.len() as i32,
    };
    write_header(&mut out, &info);
    (out, info)
}

/// Writes `info` into the first HEADER_LEN bytes of `batch` and computes the CRC.
pub fn write_header(batch: &mut [u8], info: &BatchInfo) {
    let length = (batch.len() - LOG_OVERHEAD) as i32;
    batch[0..8].copy_from_slice(&info.base_offset.to_be_bytes());
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    batch[12..16].copy_from_slice(&info.partition_leader_epoch.to_be_bytes());
    batch[16] = MAGIC;
    batch[21..23].copy_from_slice(&info.attributes.to_be_bytes());
    batch[23..27].copy_from_slice(&info.last_offset_delta.to_be_bytes());
    batch[27..35].copy_from_slice(&info.base_timestamp.to_be_bytes());
    batch[35..43].copy_from_slice(&info.max_timestamp.to_be_bytes());
    batch[43..51].copy_from_slice(&info.producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&info.producer_epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&info.base_sequence.to_be_bytes());
    batch[57..61].copy_from_slice(&info.records_count.to_be_bytes());
    let crc = crc32c(&batch[CRC_START..]);
    batch[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
}

// ---- decoding ----

/// One decoded record, borrowing from the batch (or its decompressed records).
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Header bytes and count; every header was checked while decoding.
    headers: (&'a [u8], usize),
}

impl<'a> RecordView<'a> {
    pub fn header_count(&self) -> usize {
        self.headers.1
    }

    /// Header (key, value) pairs; keys are checked to be UTF-8 while decoding.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let (buf, count) = self.headers;
        let mut pos = 0usize;
        (0..count).map(move |_| {
            let k = read_bytes_field(buf, &mut pos)
                .expect("checked")
                .expect("non-null");
            let v = read_bytes_field(buf, &mut pos).expect("checked");
            (k, v)
        })
    }
}

/// A nullable length-prefixed bytes field: Ok(None) for null; Err on truncation or bad length.
fn read_bytes_field<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> std::result::Result<Option<&'a [u8]>, ()> {
    let len = get_varint(buf, pos).ok_or(())?;
    if len < 0 {
        return if len == -1 { Ok(None) } else { Err(()) };
    }
    let end = pos.checked_add(len as usize).ok_or(())?;
    let b = buf.get(*pos..end).ok_or(())?;
    *pos = end;
    Ok(Some(b))
}

fn read_limited(mut r: impl Read, what: &str) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let n = r
        .by_ref()
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{what} decompression failed: {e}"))?;
    if n as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(format!(
            "{what} batch decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"
        ));
    }
    Ok(out)
}

fn snappy_decompress(data: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let raw = |block: &[u8]| -> std::result::Result<Vec<u8>, String> {
        let len = snap::raw::decompress_len(block).map_err(|e| format!("snappy: {e}"))?;
        if len as u64 > MAX_DECOMPRESSED_BYTES {
            return Err("snappy block too large".into());
        }
        snap::raw::Decoder::new()
            .decompress_vec(block)
            .map_err(|e| format!("snappy: {e}"))
    };
    if !data.starts_with(&XERIAL_MAGIC) {
        return raw(data);
    }
    // Xerial framing (Java's snappy-java): 16-byte header, then [int32 length][raw block]...
    let mut out = Vec::new();
    let mut pos = 16usize;
    while pos < data.len() {
        let len_bytes = data
            .get(pos..pos + 4)
            .ok_or("snappy: truncated xerial block length")?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        pos += 4;
        let block = data
            .get(pos..pos + len)
            .ok_or("snappy: truncated xerial block")?;
        out.extend_from_slice(&raw(block)?);
        if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
            return Err("snappy batch too large".into());
        }
        pos += len;
    }
    Ok(out)
}

/// Decompresses the records section of a batch with codec `codec`.
pub fn decompress(codec: u8, data: &[u8]) -> std::result::Result<Vec<u8>, DecodeError> {
    let r = match codec {
        1 => read_limited(flate2::read::MultiGzDecoder::new(data), "gzip"),
        2 => snappy_decompress(data),
        3 => read_limited(lz4_flex::frame::FrameDecoder::new(data), "lz4"),
        4 => match zstd::stream::read::Decoder::new(data) {
            Ok(d) => read_limited(d, "zstd"),
            Err(e) => Err(format!("zstd: {e}")),
        },
        other => return Err(DecodeError::UnsupportedCompression(other)),
    };
    r.map_err(DecodeError::Corrupt)
}

#[derive(Debug)]
pub enum DecodeError {
    Corrupt(String),
    UnsupportedCompression(u8),
}

/// Calls `f` for each record of the batch with offset >= `min_offset`, until `f` returns false.
/// `batch` is exactly one batch (already CRC-checked by the caller).
pub fn for_each_record(
    batch: &[u8],
    info: &BatchInfo,
    min_offset: i64,
    mut f: impl FnMut(RecordView<'_>) -> bool,
) -> std::result::Result<(), DecodeError> {
    let section = &batch[HEADER_LEN..];
    let decompressed;
    let data: &[u8] = match info.compression() {
        0 => section,
        codec => {
            decompressed = decompress(codec, section)?;
            &decompressed
        }
    };
    let corrupt =
        |i: i32, what: &str| DecodeError::Corrupt(format!("record {i} of the batch: {what}"));
    let mut pos = 0usize;
    for i in 0..info.records_count {
        let len = get_varint(data, &mut pos).ok_or_else(|| corrupt(i, "bad length"))?;
        if len < 0 {
            return Err(corrupt(i, "negative length"));
        }
        let end = pos
            .checked_add(len as usize)
            .filter(|e| *e <= data.len())
            .ok_or_else(|| corrupt(i, "truncated"))?;
        let rec = &data[..end];
        pos += 1; // attributes, unused in v2
        let ts_delta =
            get_varlong(rec, &mut pos).ok_or_else(|| corrupt(i, "bad timestamp delta"))?;
        let offset_delta =
            get_varint(rec, &mut pos).ok_or_else(|| corrupt(i, "bad offset delta"))?;
        let key = read_bytes_field(rec, &mut pos).map_err(|_| corrupt(i, "bad key"))?;
        let value = read_bytes_field(rec, &mut pos).map_err(|_| corrupt(i, "bad value"))?;
        let count = get_varint(rec, &mut pos)
            .filter(|c| *c >= 0)
            .ok_or_else(|| corrupt(i, "bad header count"))?;
        let headers_start = pos;
        for _ in 0..count {
            let k = read_bytes_field(rec, &mut pos).map_err(|_| corrupt(i, "bad header key"))?;
            match k {
                Some(k) if std::str::from_utf8(k).is_ok() => {}
                _ => return Err(corrupt(i, "header key is null or not UTF-8")),
            }
            read_bytes_field(rec, &mut pos).map_err(|_| corrupt(i, "bad header value"))?;
        }
        if pos != end {
            return Err(corrupt(i, "length does not match its fields"));
        }
        let offset = info.base_offset + i64::from(offset_delta);
        if offset < min_offset {
            continue;
        }
        let timestamp = if info.is_log_append_time() {
            info.max_timestamp
        } else {
            info.base_timestamp + ts_delta
        };
        let view = RecordView {
            offset,
            timestamp,
            key,
            value,
            headers: (&rec[headers_start..end], count as usize),
        };
        if !f(view) {
            break;
        }
    }
    Ok(())
}

/// Checks the records of one CRC-checked batch before it is accepted, as Kafka's
/// LogValidator: a known codec whose body decompresses (an error here is `Corrupt`), then
/// (an error here is `Err(Ok(reason))`) every record's framing and lengths, offset deltas
/// 0, 1, 2... in order, and no bytes after the last record.
pub fn validate_records(
    batch: &[u8],
    info: &BatchInfo,
) -> std::result::Result<(), std::result::Result<String, DecodeError>> {
    let section = &batch[HEADER_LEN..];
    let decompressed;
    let data = match info.compression() {
        0 => section,
        codec => {
            decompressed = decompress(codec, section).map_err(Err)?;
            &decompressed[..]
        }
    };
    check_records(data, info.records_count).map_err(Ok)
}

/// The records' framing, walked without building records (this runs on every produced
/// batch; `for_each_record` is the decoding twin).
fn check_records(data: &[u8], count: i32) -> std::result::Result<(), String> {
    let bad = |i: i32, what: &str| format!("record {i} of the batch: {what}");
    // Only the length prefixes chain one record to the next; each record's fields are parsed
    // from its own start, so the processor overlaps the records' parsing.
    let mut next = 0usize;
    for i in 0..count {
        let mut pos = next;
        let len = get_varint(data, &mut pos)
            .filter(|l| *l >= 0)
            .ok_or_else(|| bad(i, "bad length"))?;
        let end = pos
            .checked_add(len as usize)
            .filter(|e| *e <= data.len())
            .ok_or_else(|| bad(i, "truncated"))?;
        next = end;
        let rec = &data[..end];
        pos += 1; // attributes
        get_varlong(rec, &mut pos).ok_or_else(|| bad(i, "bad timestamp delta"))?;
        let delta = get_varint(rec, &mut pos).ok_or_else(|| bad(i, "bad offset delta"))?;
        if delta != i {
            return Err(bad(i, &format!("offset delta {delta}, expected {i}")));
        }
        skip_bytes_field(rec, &mut pos).ok_or_else(|| bad(i, "bad key"))?;
        skip_bytes_field(rec, &mut pos).ok_or_else(|| bad(i, "bad value"))?;
        let headers = get_varint(rec, &mut pos)
            .filter(|c| *c >= 0)
            .ok_or_else(|| bad(i, "bad header count"))?;
        for _ in 0..headers {
            match read_bytes_field(rec, &mut pos) {
                Ok(Some(k)) if std::str::from_utf8(k).is_ok() => {}
                Ok(_) => return Err(bad(i, "header key is null or not UTF-8")),
                Err(()) => return Err(bad(i, "bad header key")),
            }
            skip_bytes_field(rec, &mut pos).ok_or_else(|| bad(i, "bad header value"))?;
        }
        if pos != end {
            return Err(bad(i, "length does not match its fields"));
        }
    }
    if next != data.len() {
        return Err(format!(
            "{} bytes after the last of its {count} records",
            data.len() - next
        ));
    }
    Ok(())
}

/// Steps over a nullable length-prefixed field; None on truncation or a bad length.
#[inline(always)]
fn skip_bytes_field(buf: &[u8], pos: &mut usize) -> Option<()> {
    let len = get_varint(buf, pos)?;
    if len < 0 {
        return (len == -1).then_some(());
    }
    let end = pos.checked_add(len as usize).filter(|e| *e <= buf.len())?;
    *pos = end;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec<'a>(ts: i64, k: Option<&'a [u8]>, v: Option<&'a [u8]>) -> NewRecord<'a> {
        NewRecord {
            timestamp: ts,
            key: k,
            value: v,
            headers: vec![(b"h".as_slice(), Some(b"x".as_slice()))],
        }
    }

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn build_validate_decode_round_trip() {
        let records = [rec(1000, Some(b"k"), Some(b"v")), rec(1005, None, None)];
        let (mut buf, _) = build_batch(&records);
        let mut infos = validate_batches(&buf, 1 << 20, OffsetMode::Assign).unwrap();
        assign_offsets(&mut buf, &mut infos, 42, 7, None);
        let infos = validate_batches(&buf, 1 << 20, OffsetMode::Keep { next_offset: 42 }).unwrap();
        assert_eq!(infos[0].base_offset, 42);
        assert_eq!(infos[0].partition_leader_epoch, 7);
        assert_eq!(infos[0].max_timestamp, 1005);
        let mut seen = Vec::new();
        for_each_record(&buf, &infos[0], 0, |r| {
            let hs: Vec<_> = r.headers().collect();
            seen.push((
                r.offset,
                r.timestamp,
                r.key.map(<[u8]>::to_vec),
                r.value.map(<[u8]>::to_vec),
                hs.len(),
            ));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (42, 1000, Some(b"k".to_vec()), Some(b"v".to_vec()), 1),
                (43, 1005, None, None, 1)
            ]
        );
    }

    #[test]
    fn log_append_time_rewrites_crc() {
        let (mut buf, _) = build_batch(&[rec(5, None, Some(b"v"))]);
        let mut infos = validate_batches(&buf, 1 << 20, OffsetMode::Assign).unwrap();
        assign_offsets(&mut buf, &mut infos, 0, 0, Some(99));
        let again = validate_batches(&buf, 1 << 20, OffsetMode::Keep { next_offset: 0 }).unwrap();
        assert!(again[0].is_log_append_time());
        assert_eq!(again[0].max_timestamp, 99);
    }

    #[test]
    fn corrupt_inputs_are_located() {
        let (one, _) = build_batch(&[rec(1, None, Some(b"v"))]);
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let last = two.len() - 1;
        two[last] ^= 1;
        match validate_batches(&two, 1 << 20, OffsetMode::Assign) {
            Err(Error::Corrupt {
                location:
                    crate::error::Location::Input {
                        batch_index: 1,
                        position,
                    },
                ..
            }) => {
                assert_eq!(position, one.len() as u64)
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            validate_batches(&one[..one.len() - 1], 1 << 20, OffsetMode::Assign),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(
            validate_batches(&one, 10, OffsetMode::Assign),
            Err(Error::RecordTooLarge { .. })
        ));
        assert!(matches!(
            validate_batches(&one, 1 << 20, OffsetMode::Keep { next_offset: 3 }),
            Err(Error::InvalidAppendOffset {
                expected: 3,
                actual: 0
            })
        ));
    }

    proptest! {
        #[test]
        fn varlong_round_trip(v in any::<i64>()) {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            prop_assert_eq!(out.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varlong(&out, &mut pos), Some(v));
            prop_assert_eq!(pos, out.len());
        }

        #[test]
        fn records_round_trip(items in proptest::collection::vec(
            (any::<i32>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
             proptest::collection::vec(("[a-z]{0,6}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..3)),
            1..20)) {
            let records: Vec<NewRecord<'_>> = items.iter().map(|(ts, k, v, hs)| NewRecord {
                timestamp: i64::from(*ts),
                key: k.as_deref(),
                value: v.as_deref(),
                headers: hs.iter().map(|(hk, hv)| (hk.as_bytes(), hv.as_deref())).collect(),
            }).collect();
            let (buf, info) = build_batch(&records);
            let infos = validate_batches(&buf, u64::MAX, OffsetMode::Assign).unwrap();
            prop_assert_eq!(infos[0], info);
            let mut i = 0;
            for_each_record(&buf, &info, 0, |r| {
                let (ts, k, v, hs) = &items[i];
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, i64::from(*ts));
                assert_eq!(r.key, k.as_deref());
                assert_eq!(r.value, v.as_deref());
                let got: Vec<_> = r.headers().collect();
                let want: Vec<_> = hs.iter().map(|(hk, hv)| (hk.as_bytes(), hv.as_deref())).collect();
                assert_eq!(got, want);
                i += 1;
                true
            }).unwrap();
            prop_assert_eq!(i, items.len());
        }

        /// Whatever the validation accepts, decoding reads back whole: a damaged records
        /// section under a CRC made right again is refused or decodes to every record.
        #[test]
        fn accepted_batches_always_decode(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..8),
            at in any::<usize>(),
            byte in any::<u8>(),
        ) {
            let records: Vec<NewRecord<'_>> = values.iter().map(|v| NewRecord {
                timestamp: 5, key: None, value: Some(v), headers: vec![],
            }).collect();
            let (mut buf, _) = build_batch(&records);
            let at = HEADER_LEN + at % (buf.len() - HEADER_LEN);
            buf[at] = byte;
            let crc = crc32c(&buf[CRC_START..]);
            buf[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
            if let Ok(infos) = validate_batches(&buf, u64::MAX, OffsetMode::Assign) {
                let mut n = 0;
                for_each_record(&buf, &infos[0], 0, |_| { n += 1; true }).unwrap();
                prop_assert_eq!(n, infos[0].records_count);
            }
        }
    }
}
