//! `RecordReader`: a [`PrefetchReader`] of raw record batches, waited on with the GIL released.

use std::path::PathBuf;
use std::sync::Arc;

use pipemode_core::{Error, PrefetchReader, RecordBatchBuilder};
use pyo3::prelude::*;

use crate::batch::PyRecordBatch;
use crate::errors::to_pyerr;
use crate::options::{positive, ReaderArgs};
use crate::reader_base::{PyReaderBase, SharedReader};

/// Every argument is required: `pipemode.RecordReader` passes them all, with the
/// defaults the core defines and `_native` exports (see `lib.rs`).
#[pyclass(name = "RecordReader", module = "pipemode._native", extends = PyReaderBase, frozen)]
pub struct PyRecordReader {
    reader: Arc<SharedReader<RecordBatchBuilder>>,
    path: PathBuf,
    name: Option<String>,
}

#[pymethods]
impl PyRecordReader {
    #[new]
    #[pyo3(signature = (
        path,
        record_format,
        *,
        batch_size,
        max_corrupted_records_to_skip,
        multipart,
        open_timeout,
        name,
        buffer_size,
        prefetch,
        max_batch_bytes,
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
    ) -> PyResult<PyClassInitializer<Self>> {
        let build = || -> Result<PyClassInitializer<Self>, Error> {
            let options = ReaderArgs {
                record_format,
                max_corrupted_records_to_skip,
                multipart,
                open_timeout,
                name: name.clone(),
                buffer_size,
                prefetch,
            }
            .parse()?;
            let builder = RecordBatchBuilder::with_max_bytes(
                positive("batch_size", batch_size)?,
                positive("max_batch_bytes", max_batch_bytes)?,
            );
            let reader = PrefetchReader::new(path.clone(), options, builder)?;
            let (reader, base) = SharedReader::new(reader);
            Ok(PyClassInitializer::from(base).add_subclass(PyRecordReader { reader, path, name }))
        };
        build().map_err(|e| to_pyerr(py, e))
    }

    /// The next batch, or None at the end of the stream (and after an error or `close`).
    fn next_batch(&self, py: Python<'_>) -> PyResult<Option<PyRecordBatch>> {
        Ok(self.reader.next_batch(py)?.map(PyRecordBatch::new))
    }

    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    #[getter]
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}
