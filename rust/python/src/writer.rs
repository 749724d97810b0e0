//! `RecordWriter`: RecordIO, TFRecord or TextLine records into a file or FIFO.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use pipemode_core::{Format, RecordWriter};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::to_pyerr;

#[pyclass(name = "RecordWriter", module = "pipemode._native", frozen)]
pub struct PyRecordWriter {
    writer: Mutex<Option<RecordWriter>>,
    // Outside the mutex, so that asking never waits behind a write blocked on a FIFO.
    closed: AtomicBool,
    path: PathBuf,
}

impl PyRecordWriter {
    /// The writer's slot. Taken with the GIL released by every caller: another thread may hold
    /// it while its write waits for a FIFO's reader, which may need the GIL to read.
    fn slot(&self) -> MutexGuard<'_, Option<RecordWriter>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the open writer with the GIL released (a FIFO write may wait for its reader).
    fn with_writer<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut RecordWriter) -> pipemode_core::Result<T> + Send,
    ) -> PyResult<T> {
        let result = py.detach(|| self.slot().as_mut().map(f));
        match result {
            None => Err(PyValueError::new_err(format!(
                "{}: write to a closed RecordWriter",
                self.path.display()
            ))),
            Some(written) => written.map_err(|e| to_pyerr(py, e)),
        }
    }
}

#[pymethods]
impl PyRecordWriter {
    /// Creates or truncates `path`; a FIFO is opened for writing, which waits for its reader.
    #[new]
    #[pyo3(signature = (path, record_format = "RecordIO"))]
    fn new(py: Python<'_>, path: PathBuf, record_format: &str) -> PyResult<Self> {
        let format: Format = record_format.parse().map_err(|e| to_pyerr(py, e))?;
        let writer = py
            .detach(|| RecordWriter::create(&path, format))
            .map_err(|e| to_pyerr(py, e))?;
        Ok(PyRecordWriter {
            writer: Mutex::new(Some(writer)),
            closed: AtomicBool::new(false),
            path,
        })
    }

    /// Writes one record from any bytes-like object.
    fn write(&self, py: Python<'_>, record: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Ok(bytes) = record.cast::<PyBytes>() {
            let data = bytes.as_bytes();
            return self.with_writer(py, |w| w.write_record(data));
        }
        let buffer = PyBuffer::<u8>::get(record)?;
        let data = buffer.to_vec(py)?;
        self.with_writer(py, |w| w.write_record(&data))
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        self.with_writer(py, |w| w.flush())
    }

    /// Flushes and closes; closing twice is harmless.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.closed.store(true, Ordering::Relaxed);
        py.detach(|| match self.slot().take() {
            Some(writer) => writer.into_inner().map(drop),
            None => Ok(()),
        })
        .map_err(|e| to_pyerr(py, e))
    }

    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for PyRecordWriter {
    /// A writer dropped unclosed still delivers what it buffered, as a Python file does, but
    /// with the GIL released (a FIFO flush may wait for its reader) and, since nobody is left
    /// to raise to, a ResourceWarning naming the path when that fails.
    fn drop(&mut self) {
        let Some(writer) = self.slot().take() else {
            return;
        };
        Python::attach(|py| {
            if let Err(error) = py.detach(|| writer.into_inner()) {
                let message = format!(
                    "RecordWriter for {} dropped unclosed; flushing it failed: {error}",
                    self.path.display()
                );
                let category = py.get_type::<pyo3::exceptions::PyResourceWarning>();
                if let Ok(message) = std::ffi::CString::new(message) {
                    let _ = PyErr::warn(py, &category, &message, 1);
                }
            }
        });
    }
}
