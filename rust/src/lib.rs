//! tidelog-core: the storage engine of tidelog, a Kafka-compatible streaming log.
//!
//! The on-disk format is Kafka's: a partition directory of segments, each a `.log` of
//! RecordBatch v2 with a sparse `.index` and `.timeindex`, so a fetch can send segment bytes
//! straight to a socket.
//!
//! - [`batch`]: RecordBatch v2 parsing, CRC-32C validation, offset assignment, record codec
//! - [`index`]: memory-mapped offset and time indexes
//! - [`segment`]: one `.log` + indexes
//! - [`log`]: one partition: segments, roll, flush, retention, truncation, recovery
//! - [`zerocopy`]: sendfile(2) of a segment range to a socket
//! - `python` (feature "python"): the PyO3 module `tidelog._core`

pub mod batch;
pub mod error;
pub mod index;
pub mod log;
pub mod segment;
pub mod zerocopy;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};
pub use log::{AppendInfo, Log, LogConfig, RecoveryReport};
