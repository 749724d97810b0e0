//! `RecordWriter`: RecordIO, TFRecord or TextLine records into a file or FIFO.

use std::path::PathBuf;
use std::sync::Mutex;

use pipemode_core::{Format, RecordWriter};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::errors::to_pyerr;

#[pyclass(name = "RecordWriter", module = "pipemode._native", frozen)]
pub struct PyRecordWriter {
    writer: Mutex<Option<RecordWriter>>,
    path: PathBuf,
}

impl PyRecordWriter {
    /// Runs `f` on the open writer with the GIL released (a FIFO write may wait for its reader).
    fn with_writer<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut RecordWriter) -> pipemode_core::Result<T> + Send,
    ) -> PyResult<T> {
        let result = py.detach(|| {
            let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            guard.as_mut().map(f)
        });
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
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        match writer {
            Some(writer) => py
                .detach(|| writer.into_inner().map(drop))
                .map_err(|e| to_pyerr(py, e)),
            None => Ok(()),
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }
}
