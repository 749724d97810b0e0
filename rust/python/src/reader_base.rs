//! What RecordReader and ExampleReader share besides their options: the `_ReaderCounters` base
//! class with the reader thread's counters, and [`SharedReader`], their [`PrefetchReader`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pipemode_core::{BatchBuilder, Canceller, PrefetchReader, ReaderStats};
use pyo3::prelude::*;

use crate::errors::to_pyerr;

#[pyclass(
    name = "_ReaderCounters",
    module = "pipemode._native",
    subclass,
    frozen
)]
pub struct PyReaderCounters {
    stats: Arc<ReaderStats>,
}

impl PyReaderCounters {
    pub fn new(stats: Arc<ReaderStats>) -> Self {
        Self { stats }
    }
}

#[pymethods]
impl PyReaderCounters {
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

impl<B: BatchBuilder> SharedReader<B> {
    /// The reader, and the `_ReaderCounters` base of the pyclass that will hold it.
    pub fn new(reader: PrefetchReader<B>) -> (Self, PyReaderCounters) {
        let counters = PyReaderCounters::new(reader.stats());
        let shared = SharedReader {
            canceller: reader.canceller(),
            started: AtomicBool::new(reader.started()),
            reader: Mutex::new(reader),
        };
        (shared, counters)
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

    /// Stops the reader thread and closes the source, even while another thread waits in
    /// `next_batch` (which then returns None).
    pub fn close(&self, py: Python<'_>) {
        self.canceller.cancel();
        py.detach(|| self.lock().close());
    }

    /// True once the first read has asked for the source.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }
}
