//! `RecordReader`: a [`PrefetchReader`] of raw record batches, waited on with the GIL released.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pipemode_core::framing::FramingOptions;
use pipemode_core::source::{SourceOptions, DEFAULT_BUFFER_SIZE};
use pipemode_core::{
    Canceller, Error, PrefetchReader, ReaderOptions, ReaderStats, RecordBatchBuilder,
};
use pyo3::prelude::*;

use crate::batch::PyRecordBatch;
use crate::errors::to_pyerr;

#[pyclass(name = "RecordReader", module = "pipemode._native", frozen)]
pub struct PyRecordReader {
    // A Mutex rather than PyRefMut: a thread waiting for a batch holds no Python borrow, so
    // another thread can still read counters or close the reader.
    reader: Mutex<PrefetchReader<RecordBatchBuilder>>,
    canceller: Canceller,
    stats: Arc<ReaderStats>,
    path: PathBuf,
    name: Option<String>,
}

impl PyRecordReader {
    fn lock(&self) -> MutexGuard<'_, PrefetchReader<RecordBatchBuilder>> {
        // No code path panics while holding the lock; recover the guard if one ever did.
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Seconds from Python (`None` = forever) as a timeout, rejecting what is not a duration.
pub fn parse_timeout(seconds: Option<f64>) -> Result<Option<Duration>, Error> {
    seconds
        .map(|s| {
            Duration::try_from_secs_f64(s).map_err(|_| {
                Error::Config(format!(
                    "open_timeout must be a number of seconds >= 0 or None, not {s}"
                ))
            })
        })
        .transpose()
}

/// `value` as a count of at least 1, or a clear error naming the argument.
pub fn positive(name: &str, value: i64) -> Result<usize, Error> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v >= 1)
        .ok_or_else(|| Error::Config(format!("{name} must be >= 1, not {value}")))
}

#[pymethods]
impl PyRecordReader {
    #[new]
    #[pyo3(signature = (
        path,
        record_format = "RecordIO",
        *,
        batch_size = 1024,
        max_corrupted_records_to_skip = 0,
        multipart = "dmlc",
        open_timeout = Some(120.0),
        name = None,
        buffer_size = DEFAULT_BUFFER_SIZE as i64,
        prefetch = 4,
        max_batch_bytes = RecordBatchBuilder::DEFAULT_MAX_BYTES as i64,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        record_format: &str,
        batch_size: i64,
        max_corrupted_records_to_skip: i64,
        multipart: &str,
        open_timeout: Option<f64>,
        name: Option<String>,
        buffer_size: i64,
        prefetch: i64,
        max_batch_bytes: i64,
    ) -> PyResult<Self> {
        let build = || -> Result<Self, Error> {
            let max_skip = u64::try_from(max_corrupted_records_to_skip).map_err(|_| {
                Error::Config(format!(
                    "max_corrupted_records_to_skip must be >= 0, not {max_corrupted_records_to_skip}"
                ))
            })?;
            let options = ReaderOptions {
                format: record_format.parse()?,
                framing: FramingOptions {
                    multipart: multipart.parse()?,
                    max_corrupted_records_to_skip: max_skip,
                },
                source: SourceOptions {
                    open_timeout: parse_timeout(open_timeout)?,
                    buffer_size: positive("buffer_size", buffer_size)?,
                },
                prefetch: positive("prefetch", prefetch)?,
                name: name.clone(),
            };
            let builder = RecordBatchBuilder::with_max_bytes(
                positive("batch_size", batch_size)?,
                positive("max_batch_bytes", max_batch_bytes)?,
            );
            let reader = PrefetchReader::new(path.clone(), options, builder)?;
            Ok(PyRecordReader {
                canceller: reader.canceller(),
                stats: reader.stats(),
                reader: Mutex::new(reader),
                path,
                name,
            })
        };
        build().map_err(|e| to_pyerr(py, e))
    }

    /// The next batch, or None at the end of the stream (and after an error or `close`).
    fn next_batch(&self, py: Python<'_>) -> PyResult<Option<PyRecordBatch>> {
        match py.detach(|| self.lock().next_batch()) {
            Ok(batch) => Ok(batch.map(PyRecordBatch::new)),
            Err(error) => Err(to_pyerr(py, error)),
        }
    }

    /// Stops the reader thread and closes the source, even while another thread waits in
    /// `next_batch` (which then returns None).
    fn close(&self, py: Python<'_>) {
        self.canceller.cancel();
        py.detach(|| self.lock().close());
    }

    /// True once the first read has asked for the source.
    #[getter]
    fn started(&self) -> bool {
        self.lock().started()
    }

    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Records read so far (skipped ones excluded).
    #[getter]
    fn records_read(&self) -> u64 {
        self.stats.snapshot().records
    }

    /// Stream bytes framed so far, framing included.
    #[getter]
    fn bytes_read(&self) -> u64 {
        self.stats.snapshot().bytes
    }

    /// Corrupt records skipped under max_corrupted_records_to_skip.
    #[getter]
    fn records_skipped(&self) -> u64 {
        self.stats.snapshot().records_skipped
    }

    /// Seconds the reader thread waited for the path, the FIFO's writer, or its data.
    #[getter]
    fn pipe_wait_seconds(&self) -> f64 {
        self.stats.snapshot().source_wait.as_secs_f64()
    }

    /// Seconds the reader thread waited because the consumer had not taken its batches.
    #[getter]
    fn consumer_wait_seconds(&self) -> f64 {
        self.stats.snapshot().consumer_wait.as_secs_f64()
    }
}
