//! Errors of the storage core. Each variant carries what a caller needs to act on it:
//! the offset, the file and the byte position involved.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Where invalid bytes were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In a caller-supplied buffer, at `batch_index` / `position` within it.
    Input { batch_index: usize, position: u64 },
    /// In a stored segment file, at byte `position` of it.
    Segment { path: PathBuf, position: u64 },
}

#[derive(Debug)]
pub enum Error {
    /// Bytes that are not a valid RecordBatch v2 (bad length, magic, CRC, counts, offsets).
    Corrupt { location: Location, reason: String },
    /// A caller-supplied batch with a valid CRC whose records do not parse (framing, lengths,
    /// offset deltas, trailing bytes): record `reason` names the record.
    InvalidRecord {
        batch_index: usize,
        position: u64,
        reason: String,
    },
    /// A batch larger than `max.message.bytes`.
    RecordTooLarge { size: u64, max_size: u64 },
    /// A read outside `[log start offset, log end offset]`.
    OffsetOutOfRange {
        offset: i64,
        start_offset: i64,
        end_offset: i64,
    },
    /// Batches appended with their own offsets that do not continue the log end offset.
    InvalidAppendOffset { expected: i64, actual: i64 },
    /// A batch compressed with a codec this build cannot decode.
    UnsupportedCompression { codec: u8 },
    /// The log was closed (or a write failed and the log must be reopened).
    Closed { reason: String },
    /// Another process holds the directory's lock.
    Locked { path: PathBuf },
    /// A configuration value outside its range.
    InvalidConfig { field: &'static str, reason: String },
    /// An operating-system error during `operation` on `path`.
    Io {
        operation: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt_input(
        batch_index: usize,
        position: usize,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            location: Location::Input {
                batch_index,
                position: position as u64,
            },
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt_segment(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            location: Location::Segment {
                path: path.into(),
                position,
            },
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Corrupt {
                location:
                    Location::Input {
                        batch_index,
                        position,
                    },
                reason,
            } => {
                write!(
                    f,
                    "corrupt record batch {batch_index} at byte {position} of the input: {reason}"
                )
            }
            Error::Corrupt {
                location: Location::Segment { path, position },
                reason,
            } => {
                write!(
                    f,
                    "corrupt record batch at byte {position} of {}: {reason}",
                    path.display()
                )
            }
            Error::InvalidRecord {
                batch_index,
                position,
                reason,
            } => {
                write!(
                    f,
                    "invalid record in batch {batch_index} at byte {position} of the input: {reason}"
                )
            }
            Error::RecordTooLarge { size, max_size } => {
                write!(
                    f,
                    "record batch of {size} bytes exceeds max.message.bytes={max_size}"
                )
            }
            Error::OffsetOutOfRange {
                offset,
                start_offset,
                end_offset,
            } => {
                write!(
                    f,
                    "offset {offset} is outside the log's range [{start_offset}, {end_offset}]"
                )
            }
            Error::InvalidAppendOffset { expected, actual } => {
                write!(
                    f,
                    "appended batch starts at offset {actual} but the log end offset is {expected}"
                )
            }
            Error::UnsupportedCompression { codec } => {
                write!(f, "unsupported compression codec {codec}")
            }
            Error::Closed { reason } => write!(f, "log is closed: {reason}"),
            Error::Locked { path } => write!(f, "{} is locked by another process", path.display()),
            Error::InvalidConfig { field, reason } => write!(f, "invalid config {field}: {reason}"),
            Error::Io {
                operation,
                path,
                source,
            } => {
                write!(f, "{operation} {} failed: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
