//! The PyO3 module `tidelog._core`: thin wrappers over the storage core. Every call that does
//! I/O or checksums releases the GIL; a `Log` is guarded by a read-write lock so that one
//! writer and many readers may use it from several threads.

use crate::batch::{self, NewRecord, OffsetMode};
use crate::error::{Error, Location};
use crate::log::{AppendInfo, Log, LogConfig};
use crate::segment::{self, FileSlice};
use pyo3::basic::CompareOp;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyList, PyModule, PyString, PyTuple, PyType};
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::RwLock;

/// Reads of more bytes than this pause the cyclic GC while they create records.
const GC_PAUSE_BYTES: usize = 16 * 1024;

/// Disables Python's cyclic garbage collector until dropped (if it was enabled).
struct GcPause<'py> {
    gc: Option<Bound<'py, PyModule>>,
}

impl<'py> GcPause<'py> {
    fn new(py: Python<'py>) -> PyResult<Self> {
        let gc = py.import("gc")?;
        if gc.call_method0("isenabled")?.is_truthy()? {
            gc.call_method0("disable")?;
            return Ok(GcPause { gc: Some(gc) });
        }
        Ok(GcPause { gc: None })
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if let Some(gc) = &self.gc {
            // Re-enabling cannot fail in practice; an error here has nowhere to go.
            let _ = gc.call_method0("enable");
        }
    }
}

/// Appends below this size are written without releasing the GIL (see `write_short`).
const SHORT_APPEND_BYTES: u32 = 16 * 1024;

fn errors_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("tidelog.errors")?.getattr(name)
}

/// Converts a core error into the matching `tidelog.errors` exception.
fn to_pyerr(py: Python<'_>, err: Error) -> PyErr {
    let message = err.to_string();
    let build = || -> PyResult<PyErr> {
        let kwargs = PyDict::new(py);
        let name = match &err {
            Error::Corrupt { location, reason } => {
                kwargs.set_item("reason", reason)?;
                match location {
                    Location::Input {
                        batch_index,
                        position,
                    } => {
                        kwargs.set_item("batch_index", batch_index)?;
                        kwargs.set_item("position", position)?;
                    }
                    Location::Segment { path, position } => {
                        kwargs.set_item("segment", path.to_string_lossy())?;
                        kwargs.set_item("position", position)?;
                    }
                }
                "CorruptRecordError"
            }
            Error::InvalidRecord {
                batch_index,
                position,
                reason,
            } => {
                kwargs.set_item("reason", reason)?;
                kwargs.set_item("batch_index", batch_index)?;
                kwargs.set_item("position", position)?;
                "InvalidRecordError"
            }
            Error::RecordTooLarge { size, max_size } => {
                kwargs.set_item("size", size)?;
                kwargs.set_item("max_size", max_size)?;
                "RecordTooLargeError"
            }
            Error::OffsetOutOfRange {
                offset,
                start_offset,
                end_offset,
            } => {
                kwargs.set_item("offset", offset)?;
                kwargs.set_item("start_offset", start_offset)?;
                kwargs.set_item("end_offset", end_offset)?;
                "OffsetOutOfRangeError"
            }
            Error::InvalidAppendOffset { expected, actual } => {
                kwargs.set_item("expected", expected)?;
                kwargs.set_item("actual", actual)?;
                "InvalidAppendOffsetError"
            }
            Error::UnsupportedCompression { codec } => {
                kwargs.set_item("codec", codec)?;
                "UnsupportedCompressionError"
            }
            Error::Closed { .. } => "LogClosedError",
            Error::Locked { path } => {
                kwargs.set_item("path", path.to_string_lossy())?;
                "LogLockedError"
            }
            Error::InvalidConfig { field, .. } => {
                let e = PyValueError::new_err(message.clone());
                e.value(py).setattr("field", field)?;
                return Ok(e);
            }
            Error::Io {
                operation,
                path,
                source,
            } => {
                kwargs.set_item("operation", operation)?;
                kwargs.set_item("path", path.to_string_lossy())?;
                kwargs.set_item("errno", source.raw_os_error())?;
                "StorageError"
            }
        };
        let exc = errors_class(py, name)?.call((message.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

fn config_from_dict(config: &Bound<'_, PyDict>) -> PyResult<LogConfig> {
    let mut c = LogConfig::default();
    for (key, value) in config.iter() {
        let key: String = key.extract()?;
        match key.as_str() {
            "segment_bytes" => c.segment_bytes = value.extract()?,
            "segment_ms" => c.segment_ms = value.extract()?,
            "segment_index_bytes" => c.segment_index_bytes = value.extract()?,
            "index_interval_bytes" => c.index_interval_bytes = value.extract()?,
            "flush_messages" => c.flush_messages = value.extract()?,
            "flush_ms" => c.flush_ms = value.extract()?,
            "retention_bytes" => c.retention_bytes = value.extract()?,
            "retention_ms" => c.retention_ms = value.extract()?,
            "max_message_bytes" => c.max_message_bytes = value.extract()?,
            "log_append_time" => c.log_append_time = value.extract()?,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown log config field {other:?}"
                )))
            }
        }
    }
    Ok(c)
}

/// Bytes of a key, value or header: `bytes` without a copy, `str` as UTF-8, any other buffer copied.
fn field_bytes<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Option<Cow<'a, [u8]>>> {
    if obj.is_none() {
        return Ok(None);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Some(Cow::Borrowed(b.as_bytes())));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Some(Cow::Borrowed(s.to_str()?.as_bytes())));
    }
    match PyBuffer::<u8>::get(obj) {
        Ok(buf) => Ok(Some(Cow::Owned(buf.to_vec(obj.py())?))),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be bytes, str, a bytes-like object or None, not {}",
            obj.get_type().name()?
        ))),
    }
}

/// Pushes each header's key and value objects; returns how many headers there were.
fn push_headers<'py>(
    objects: &mut Vec<Bound<'py, PyAny>>,
    headers: Option<Bound<'py, PyAny>>,
) -> PyResult<usize> {
    let mut n = 0;
    if let Some(h) = headers.filter(|h| !h.is_none()) {
        for pair in h.try_iter()? {
            let (k, v): (Bound<'py, PyAny>, Bound<'py, PyAny>) = pair?.extract()?;
            if k.is_none() {
                return Err(PyTypeError::new_err(
                    "a header key must be str or bytes, not None",
                ));
            }
            objects.push(k);
            objects.push(v);
            n += 1;
        }
    }
    Ok(n)
}

fn append_result<'py>(py: Python<'py>, info: &AppendInfo) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            info.first_offset,
            info.last_offset,
            info.max_timestamp,
            info.log_append_time,
            info.record_count,
        ],
    )
}

/// One record of a log (see `tidelog.records.PyRecord`, its pure-Python twin, for the
/// documented behaviour). Created here without any Python-level call, which halves the cost of
/// decoding compared with a NamedTuple.
#[pyclass(module = "tidelog", name = "Record", frozen)]
struct PyRecord {
    #[pyo3(get)]
    offset: i64,
    #[pyo3(get)]
    timestamp: i64,
    #[pyo3(get)]
    key: Py<PyAny>,
    #[pyo3(get)]
    value: Py<PyAny>,
    #[pyo3(get)]
    headers: Py<PyTuple>,
}

impl PyRecord {
    fn fields<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (
            self.offset,
            self.timestamp,
            self.key.clone_ref(py),
            self.value.clone_ref(py),
            self.headers.clone_ref(py),
        )
            .into_pyobject(py)
    }
}

#[pymethods]
impl PyRecord {
    #[new]
    #[pyo3(signature = (offset, timestamp, key = None, value = None, headers = None))]
    fn new(
        py: Python<'_>,
        offset: i64,
        timestamp: i64,
        key: Option<Py<PyAny>>,
        value: Option<Py<PyAny>>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let headers = match headers.filter(|h| !h.is_none()) {
            None => PyTuple::empty(py).unbind(),
            Some(h) => {
                let pairs = h.try_iter()?.map(|p| {
                    p?.try_iter()?
                        .collect::<PyResult<Vec<_>>>()
                        .map(|v| PyTuple::new(py, v))
                });
                let pairs: Vec<Bound<'_, PyTuple>> =
                    pairs.collect::<PyResult<PyResult<Vec<_>>>>()??;
                PyTuple::new(py, pairs)?.unbind()
            }
        };
        Ok(PyRecord {
            offset,
            timestamp,
            key: key.unwrap_or_else(|| py.None()),
            value: value.unwrap_or_else(|| py.None()),
            headers,
        })
    }

    #[classattr]
    fn __match_args__() -> (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    ) {
        ("offset", "timestamp", "key", "value", "headers")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Record(offset={}, timestamp={}, key={}, value={}, headers={})",
            self.offset,
            self.timestamp,
            self.key.bind(py).repr()?,
            self.value.bind(py).repr()?,
            self.headers.bind(py).repr()?
        ))
    }

    fn __richcmp__<'py>(
        &self,
        py: Python<'py>,
        other: &Bound<'py, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        match other.cast::<PyRecord>() {
            Ok(other) => Ok(self
                .fields(py)?
                .rich_compare(other.get().fields(py)?, op)?
                .unbind()),
            Err(_) => Ok(py.NotImplemented()),
        }
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        self.fields(py)?.hash()
    }

    fn __len__(&self) -> usize {
        5
    }

    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.fields(py)?.as_any().get_item(index)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyIterator>> {
        self.fields(py)?.as_any().try_iter()
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyType>, Bound<'py, PyTuple>)> {
        Ok((slf.get_type(), slf.get().fields(slf.py())?))
    }
}

/// One partition log (see `tidelog.Log` for the documented public API).
#[pyclass(module = "tidelog._core", name = "Log", frozen)]
struct PyLog {
    inner: RwLock<Log>,
}

impl PyLog {
    fn read<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&Log) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let log = self.inner.read().unwrap_or_else(|p| p.into_inner());
            f(&log)
        })
        .map_err(|e| to_pyerr(py, e))
    }

    fn write<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Log) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let mut log = self.inner.write().unwrap_or_else(|p| p.into_inner());
            f(&mut log)
        })
        .map_err(|e| to_pyerr(py, e))
    }

    /// As `write`, for work too short to be worth releasing the GIL (a small append: about one
    /// write syscall) when the lock is free. Holding the GIL here cannot deadlock: no thread
    /// holding the log lock ever waits for the GIL.
    fn write_short<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Log) -> Result<T, Error> + Send,
    ) -> PyResult<T> {
        match self.inner.try_write() {
            Ok(mut log) => f(&mut log).map_err(|e| to_pyerr(py, e)),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                f(&mut p.into_inner()).map_err(|e| to_pyerr(py, e))
            }
            Err(std::sync::TryLockError::WouldBlock) => self.write(py, f),
        }
    }
}

#[pymethods]
impl PyLog {
    #[new]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        config: &Bound<'_, PyDict>,
        now_ms: i64,
    ) -> PyResult<Self> {
        let config = config_from_dict(config)?;
        let log = py
            .detach(|| Log::open(&path, config, now_ms))
            .map_err(|e| to_pyerr(py, e))?;
        Ok(PyLog {
            inner: RwLock::new(log),
        })
    }

    #[getter]
    fn start_offset(&self, py: Python<'_>) -> PyResult<i64> {
        self.read(py, |l| Ok(l.start_offset()))
    }
    #[getter]
    fn end_offset(&self, py: Python<'_>) -> PyResult<i64> {
        self.read(py, |l| Ok(l.end_offset()))
    }
    #[getter]
    fn recovery_point(&self, py: Python<'_>) -> PyResult<i64> {
        self.read(py, |l| Ok(l.recovery_point()))
    }
    #[getter]
    fn size_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        self.read(py, |l| Ok(l.size_bytes()))
    }
    #[getter]
    fn closed(&self, py: Python<'_>) -> PyResult<bool> {
        self.read(py, |l| Ok(l.is_closed()))
    }

    #[getter]
    fn active_segment_bytes(&self, py: Python<'_>) -> PyResult<u64> {
        self.read(py, |l| Ok(l.active_segment_bytes()))
    }
    #[getter]
    fn max_timestamp(&self, py: Python<'_>) -> PyResult<i64> {
        self.read(py, |l| Ok(l.max_timestamp()))
    }

    fn segments(&self, py: Python<'_>) -> PyResult<Vec<i64>> {
        self.read(py, |l| Ok(l.segment_base_offsets()))
    }

    /// (clean_shutdown, segments_recovered, bytes_truncated, truncations, next_offset_raised_to)
    /// with each truncation as (segment, position, next_offset, bytes, reason).
    #[allow(clippy::type_complexity)]
    fn recovery_report(
        &self,
        py: Python<'_>,
    ) -> PyResult<(
        bool,
        usize,
        u64,
        Vec<(i64, u64, i64, u64, String)>,
        Option<i64>,
    )> {
        self.read(py, |l| {
            let r = l.recovery_report();
            let cuts = r
                .truncations
                .iter()
                .map(|t| {
                    (
                        t.segment,
                        t.position,
                        t.next_offset,
                        t.bytes,
                        t.reason.clone(),
                    )
                })
                .collect();
            Ok((
                r.clean_shutdown,
                r.segments_recovered,
                r.bytes_truncated,
                cuts,
                r.next_offset_raised_to,
            ))
        })
    }

    /// Builds one batch from `records` — items (key, value), (key, value, headers) or
    /// (offset, timestamp, key, value, headers) — and appends it. Returns
    /// (first_offset, last_offset, max_timestamp, log_append_time, record_count).
    fn append_records<'py>(
        &self,
        py: Python<'py>,
        records: &Bound<'py, PyAny>,
        leader_epoch: i32,
        now_ms: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // Pass 1: hold every field object so that pass 2 can borrow their bytes.
        let mut objects: Vec<Bound<'py, PyAny>> = Vec::new();
        let mut shapes: Vec<(i64, usize)> = Vec::new();
        for item in records.try_iter()? {
            let item = item?;
            if let Ok(rec) = item.cast::<PyRecord>() {
                let rec = rec.get();
                objects.push(rec.key.bind(py).clone());
                objects.push(rec.value.bind(py).clone());
                let headers = rec.headers.bind(py).clone().into_any();
                let nh = push_headers(&mut objects, Some(headers))?;
                shapes.push((rec.timestamp, nh));
                continue;
            }
            let t = item.cast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err(
                    "each record must be a tuple (key, value[, headers]) or a Record",
                )
            })?;
            let (ts, key, value, headers) = match t.len() {
                2 => (now_ms, t.get_item(0)?, t.get_item(1)?, None),
                3 => (now_ms, t.get_item(0)?, t.get_item(1)?, Some(t.get_item(2)?)),
                5 => {
                    let ts = t.get_item(1)?;
                    let ts = if ts.is_none() { now_ms } else { ts.extract()? };
                    (ts, t.get_item(2)?, t.get_item(3)?, Some(t.get_item(4)?))
                }
                n => {
                    return Err(PyTypeError::new_err(format!(
                        "a record tuple has 2, 3 or 5 items, not {n}"
                    )))
                }
            };
            objects.push(key);
            objects.push(value);
            let nh = push_headers(&mut objects, headers)?;
            shapes.push((ts, nh));
        }
        if shapes.is_empty() {
            return Err(PyValueError::new_err("append needs at least one record"));
        }
        // Pass 2: borrow.
        let mut fields = Vec::with_capacity(objects.len());
        for (i, obj) in objects.iter().enumerate() {
            fields.push(field_bytes(obj, if i % 2 == 0 { "key" } else { "value" })?);
        }
        let mut next = 0usize;
        let mut new_records = Vec::with_capacity(shapes.len());
        for (ts, nh) in shapes {
            let key = fields[next].as_deref();
            let value = fields[next + 1].as_deref();
            next += 2;
            let mut headers = Vec::with_capacity(nh);
            for _ in 0..nh {
                headers.push((
                    fields[next].as_deref().unwrap_or_default(),
                    fields[next + 1].as_deref(),
                ));
                next += 2;
            }
            new_records.push(NewRecord {
                timestamp: ts,
                key,
                value,
                headers,
            });
        }
        let (mut buf, info) = batch::build_batch(&new_records);
        drop(new_records);
        let append = move |l: &mut Log| l.append_built(&mut buf, info, leader_epoch, now_ms);
        let result = if info.size < SHORT_APPEND_BYTES {
            self.write_short(py, append)?
        } else {
            self.write(py, append)?
        };
        append_result(py, &result)
    }

    /// Validates concatenated batches — `data[start:end]` — and appends them, assigning
    /// offsets unless `keep_offsets`. A `bytes` input is read in place.
    #[pyo3(signature = (data, keep_offsets, leader_epoch, now_ms, start = 0, end = None))]
    #[allow(clippy::too_many_arguments)]
    fn append_batches<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        keep_offsets: bool,
        leader_epoch: i32,
        now_ms: i64,
        start: usize,
        end: Option<usize>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let result = with_bytes(data, |bytes| {
            let end = end.unwrap_or(bytes.len());
            let part = bytes.get(start..end).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "range {start}..{end} is outside the {} bytes",
                    bytes.len()
                ))
            })?;
            self.write(py, |l| {
                l.append_batches(part, keep_offsets, leader_epoch, now_ms)
            })
        })?;
        append_result(py, &result)
    }

    /// Records with offset >= `offset`.
    fn read_records<'py>(
        &self,
        py: Python<'py>,
        offset: i64,
        max_records: usize,
        max_bytes: u64,
    ) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        let Some((buf, infos, range)) = self.read(py, |l| l.read_batches(offset, max_bytes))?
        else {
            return Ok(out);
        };
        // Records are GC-tracked objects: creating thousands would trigger a collection every
        // few hundred; the cyclic GC pauses meanwhile (nothing here can form a cycle).
        let _pause = (buf.len() > GC_PAUSE_BYTES)
            .then(|| GcPause::new(py))
            .transpose()?;
        let mut count = 0usize;
        for info in &infos {
            let start = info.position as usize;
            let bytes = &buf[start..start + info.size as usize];
            let before = count;
            let mut failure: Option<PyErr> = None;
            let decoded = batch::for_each_record(bytes, info, offset, |r| {
                if count >= max_records {
                    return false;
                }
                let row = (|| -> PyResult<()> {
                    let headers: Vec<_> = r
                        .headers()
                        .map(|(k, v)| {
                            // Keys were checked to be UTF-8 while decoding.
                            let k = std::str::from_utf8(k).unwrap_or_default();
                            (PyString::new(py, k), v.map(|v| PyBytes::new(py, v)))
                        })
                        .collect();
                    let headers = PyTuple::new(py, headers)?;
                    let none = || py.None();
                    let record = PyRecord {
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r
                            .key
                            .map_or_else(none, |k| PyBytes::new(py, k).into_any().unbind()),
                        value: r
                            .value
                            .map_or_else(none, |v| PyBytes::new(py, v).into_any().unbind()),
                        headers: headers.unbind(),
                    };
                    out.append(Bound::new(py, record)?)
                })();
                if let Err(e) = row {
                    failure = Some(e);
                    return false;
                }
                count += 1;
                true
            });
            if let Some(e) = failure {
                return Err(e);
            }
            if let Err(e) = decoded {
                if before == 0 {
                    let at = range.position + info.position;
                    return Err(to_pyerr(py, crate::log::decode_error(&range.path, at, e)));
                }
                // The batches before the damaged one stand; it is reported when read first.
                out.del_slice(before, count)?;
                break;
            }
            if count >= max_records {
                break;
            }
        }
        Ok(out)
    }

    /// Whole batches starting with the one holding `offset`, at most `max_bytes` (at least one).
    fn read_raw<'py>(
        &self,
        py: Python<'py>,
        offset: i64,
        max_bytes: u64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let Some(range) = self.read(py, |l| l.batch_range(offset, max_bytes))? else {
            return Ok(PyBytes::new(py, b""));
        };
        // Read straight into the bytes object: no intermediate buffer.
        let mut checked = Ok(Vec::new());
        let out = PyBytes::new_with(py, range.length as usize, |buf| {
            checked = py.detach(|| range.read_batches_into(buf));
            Ok(())
        })?;
        let valid = segment::valid_len(&checked.map_err(|e| to_pyerr(py, e))?);
        if valid < range.length as usize {
            // A damaged batch after valid ones: only the valid ones are returned.
            return Ok(PyBytes::new(py, &out.as_bytes()[..valid]));
        }
        Ok(out)
    }

    /// The segment range a fetch at `offset` would send, or None at the log end offset.
    #[pyo3(signature = (offset, max_bytes, max_offset = None))]
    fn slice(
        &self,
        py: Python<'_>,
        offset: i64,
        max_bytes: u64,
        max_offset: Option<i64>,
    ) -> PyResult<Option<PyFileSlice>> {
        Ok(self
            .read(py, |l| l.slice(offset, max_bytes, max_offset))?
            .map(|inner| PyFileSlice { inner }))
    }

    /// (segment base offset, index entry offset, position) where a read of `offset` starts.
    fn index_lookup(&self, py: Python<'_>, offset: i64) -> PyResult<(i64, i64, u32)> {
        self.read(py, |l| l.index_lookup(offset))
    }

    fn offset_for_time(&self, py: Python<'_>, timestamp: i64) -> PyResult<Option<(i64, i64)>> {
        self.read(py, |l| l.offset_for_time(timestamp))
    }

    /// fsyncs without holding the log lock, so appends and reads go on meanwhile.
    fn flush(&self, py: Python<'_>, now_ms: i64) -> PyResult<()> {
        let (file, end) = self.read(py, |l| l.flush_target())?;
        let synced = py.detach(|| file.sync_data());
        self.write(py, move |l| {
            let synced = synced.map_err(|e| Error::io("fsync segment", l.dir().to_path_buf(), e));
            l.flushed(end, synced, now_ms)
        })
    }
    fn roll(&self, py: Python<'_>, now_ms: i64) -> PyResult<()> {
        self.write(py, |l| l.roll(now_ms))
    }
    fn truncate_to(&self, py: Python<'_>, offset: i64, now_ms: i64) -> PyResult<()> {
        self.write(py, |l| l.truncate_to(offset, now_ms))
    }
    fn truncate_fully_and_start_at(
        &self,
        py: Python<'_>,
        offset: i64,
        now_ms: i64,
    ) -> PyResult<()> {
        self.write(py, |l| l.truncate_fully_and_start_at(offset, now_ms))
    }
    fn delete_records_before(&self, py: Python<'_>, offset: i64) -> PyResult<()> {
        self.write(py, |l| l.delete_records_before(offset))
    }
    fn apply_retention(&self, py: Python<'_>, now_ms: i64) -> PyResult<usize> {
        self.write(py, |l| l.apply_retention(now_ms))
    }
    fn reconfigure(&self, py: Python<'_>, config: &Bound<'_, PyDict>) -> PyResult<()> {
        let config = config_from_dict(config)?;
        self.write(py, |l| l.reconfigure(config))
    }
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.write(py, |l| l.close())
    }
}

/// A byte range of a segment file, held open for sending.
#[pyclass(module = "tidelog._core", name = "FileSlice", frozen)]
struct PyFileSlice {
    inner: FileSlice,
}

#[pymethods]
impl PyFileSlice {
    #[getter]
    fn position(&self) -> u64 {
        self.inner.position
    }
    #[getter]
    fn length(&self) -> u64 {
        self.inner.length
    }
    #[getter]
    fn path(&self) -> String {
        self.inner.path.to_string_lossy().into_owned()
    }

    /// Sends bytes `sent..length` of the slice to socket `fd` with sendfile(2); returns how many
    /// went out. Raises BlockingIOError when the socket is not writable.
    fn send(&self, py: Python<'_>, fd: i32, sent: u64) -> PyResult<usize> {
        let remaining = self.inner.length.saturating_sub(sent) as usize;
        let at = self.inner.position + sent;
        py.detach(|| crate::zerocopy::send_file(fd, &self.inner.file, at, remaining))
            .map_err(PyErr::from)
    }

    /// The slice's bytes (the copying path).
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut buf = vec![0u8; self.inner.length as usize];
        let n = py
            .detach(|| crate::segment::read_at(&self.inner.file, &mut buf, self.inner.position))
            .map_err(PyErr::from)?;
        buf.truncate(n);
        Ok(PyBytes::new(py, &buf))
    }
}

/// Calls `f` with the bytes of `data`: a `bytes` object without copying (it is immutable, so
/// it may be read with the GIL released), any other buffer after copying it.
fn with_bytes<T>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> PyResult<T>) -> PyResult<T> {
    if let Ok(b) = data.cast::<PyBytes>() {
        return f(b.as_bytes());
    }
    let v = PyBuffer::<u8>::get(data)?.to_vec(data.py())?;
    f(&v)
}

/// CRC-32C (Castagnoli) of a bytes-like object.
#[pyfunction]
fn crc32c(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u32> {
    with_bytes(data, |bytes| Ok(py.detach(|| batch::crc32c(bytes))))
}

/// Validates concatenated batches and assigns them offsets from `first_offset` (and the
/// LogAppendTime stamp when not None), computing each patched header as an append does, without
/// writing anything. Returns (batch count, next offset). This is the append path's CPU work.
#[pyfunction]
#[pyo3(signature = (data, first_offset, leader_epoch, log_append_time, max_batch_size))]
fn validate_and_assign(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    first_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
    max_batch_size: u64,
) -> PyResult<(usize, i64)> {
    with_bytes(data, |bytes| {
        py.detach(|| -> Result<(usize, i64), Error> {
            let mut infos = batch::validate_batches(bytes, max_batch_size, OffsetMode::Assign)?;
            batch::assign(&mut infos, first_offset, leader_epoch, log_append_time);
            let mut check = 0u8;
            for i in &infos {
                let start = i.position as usize;
                check ^= batch::patched_head(&bytes[start..start + i.size as usize], i)[17];
            }
            std::hint::black_box(check);
            Ok((
                infos.len(),
                infos.last().map_or(first_offset, |i| i.next_offset()),
            ))
        })
        .map_err(|e| to_pyerr(py, e))
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRecord>()?;
    m.add_class::<PyLog>()?;
    m.add_class::<PyFileSlice>()?;
    m.add_function(wrap_pyfunction!(crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(validate_and_assign, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
