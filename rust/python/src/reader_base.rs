//! What RecordReader and ExampleReader share: the `_ReaderBase` class (closing, waiting in
//! slices, the reader thread's counters) and [`SharedReader`], the [`PrefetchReader`] one Python
//! thread waits on while another closes it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pipemode_core::{BatchBuilder, Canceller, PrefetchReader, ReaderStats};
use pyo3::prelude::*;

use crate::errors::to_pyerr;
use crate::options::parse_seconds;

/// What the base class needs of a reader, whatever its batches are.
trait ReaderControl: Send + Sync {
    fn close(&self, py: Python<'_>);
    fn started(&self) -> bool;
    fn wait_ready(&self, py: Python<'_>, timeout: Duration) -> PyResult<bool>;
}

#[pyclass(name = "_ReaderBase", module = "pipemode._native", subclass, frozen)]
pub struct PyReaderBase {
    stats: Arc<ReaderStats>,
    control: Arc<dyn ReaderControl>,
}

#[pymethods]
impl PyReaderBase {
    /// Stops the reader thread and closes the source, even while another thread waits for a
    /// batch (which then gets None).
    fn close(&self, py: Python<'_>) {
        self.control.close(py);
    }

    /// Waits up to `timeout` seconds for the next batch, the end or an error, with the GIL
    /// released: True when the next read returns at once. Starts reading like a read does.
    fn wait_ready(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = parse_seconds("timeout", timeout).map_err(|e| to_pyerr(py, e))?;
        self.control.wait_ready(py, timeout)
    }

    /// True once the first read has asked for the source.
    #[getter]
    fn started(&self) -> bool {
        self.control.started()
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

    /// Seconds the reader thread waited because the consumer had not taken what it read.
    #[getter]
    fn consumer_wait_seconds(&self) -> f64 {
        self.stats.snapshot().consumer_wait.as_secs_f64()
    }
}

/// A [`PrefetchReader`] that one Python thread can wait on, with the GIL released, while
/// another closes it.
pub struct SharedReader<B: BatchBuilder> {
    // A Mutex rather than PyRefMut: a thread waiting for a batch holds no Python borrow, so
    // another thread can still read counters or close the reader.
    reader: Mutex<PrefetchReader<B>>,
    canceller: Canceller,
    // Kept outside the mutex: asking must not wait, with the GIL held, behind a thread blocked
    // in `next_batch`.
    started: AtomicBool,
}

impl<B: BatchBuilder + 'static> SharedReader<B> {
    /// The reader, and the `_ReaderBase` of the pyclass that will hold it.
    pub fn new(reader: PrefetchReader<B>) -> (Arc<Self>, PyReaderBase) {
        let stats = reader.stats();
        let shared = Arc::new(SharedReader {
            canceller: reader.canceller(),
            started: AtomicBool::new(reader.started()),
            reader: Mutex::new(reader),
        });
        let base = PyReaderBase {
            stats,
            control: shared.clone(),
        };
        (shared, base)
    }

    fn lock(&self) -> MutexGuard<'_, PrefetchReader<B>> {
        // No code path panics while holding the lock; recover the guard if one ever did.
        self.reader
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next batch, or None at the end of the stream (and after an error or `close`).
    pub fn next_batch(&self, py: Python<'_>) -> PyResult<Option<B::Batch>> {
        self.started.store(true, Ordering::Relaxed);
        py.detach(|| self.lock().next_batch())
            .map_err(|error| to_pyerr(py, error))
    }
}

impl<B: BatchBuilder + 'static> ReaderControl for SharedReader<B> {
    fn close(&self, py: Python<'_>) {
        self.canceller.cancel();
        py.detach(|| self.lock().close());
    }

    fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    fn wait_ready(&self, py: Python<'_>, timeout: Duration) -> PyResult<bool> {
        self.started.store(true, Ordering::Relaxed);
        py.detach(|| self.lock().wait_ready(timeout))
            .map_err(|error| to_pyerr(py, error))
    }
}
