//! `_ReaderCounters`: the counters of a reader thread, the base class of RecordReader and
//! ExampleReader so that both read them the same way.

use std::sync::Arc;

use pipemode_core::ReaderStats;
use pyo3::prelude::*;

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
