//! Core errors as the exception classes of `pipemode.errors`, so Rust and Python raise the very
//! same classes and `except pipemode.CorruptRecordError` catches both. [`to_pyerr`] is the one
//! mapping: every core error reaches Python through it. The binding raises `TypeError`,
//! `ValueError` or `IndexError` itself only for misuse that no core code sees: an argument of the
//! wrong Python type or value, an index out of range, a write to a closed writer (as Python's
//! own files raise `ValueError`).

use pipemode_core::error::at_offset;
use pipemode_core::Error;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

static CORRUPT_RECORD_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static RECORD_DECODE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static PIPE_TIMEOUT_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static PIPE_MODE_DATASET_EXCEPTION: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn error_class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
) -> PyResult<&'py Bound<'py, PyType>> {
    cell.import(py, "pipemode.errors", name)
}

/// The Python exception for a core error: the one mapping every binding uses.
pub fn to_pyerr(py: Python<'_>, error: Error) -> PyErr {
    build(py, error).unwrap_or_else(|failed| failed)
}

fn build(py: Python<'_>, error: Error) -> PyResult<PyErr> {
    let message = error.to_string();
    let exception = match error {
        Error::Corrupt { path, offset, .. } => {
            error_class(py, &CORRUPT_RECORD_ERROR, "CorruptRecordError")?
                .call1((message, path, offset))?
        }
        Error::Record {
            path,
            offset,
            record,
            ..
        } => error_class(py, &RECORD_DECODE_ERROR, "RecordDecodeError")?
            .call1((message, path, offset, record))?,
        Error::Timeout { path, .. } => {
            error_class(py, &PIPE_TIMEOUT_ERROR, "PipeTimeoutError")?.call1((message, path))?
        }
        Error::BatchRecord { record, .. } => error_class(
            py,
            &RECORD_DECODE_ERROR,
            "RecordDecodeError",
        )?
        .call1((message, py.None(), py.None(), record))?,
        // A bug, not a problem with the stream or the OS: neither an OSError nor a data error.
        Error::ReaderPanicked { .. } => return Ok(PyRuntimeError::new_err(message)),
        Error::Config(message) => {
            error_class(py, &PIPE_MODE_DATASET_EXCEPTION, "PipeModeDatasetException")?
                .call1((message,))?
        }
        Error::Io {
            path,
            offset,
            source,
        } => return Ok(os_error(py, path, offset, source)),
    };
    Ok(PyErr::from_value(exception))
}

/// `OSError(errno, strerror, filename)`, which Python turns into the matching subclass
/// (`FileNotFoundError`, `BrokenPipeError`, ...); a mid-stream failure's offset ends strerror.
/// An I/O error without an errno is still an `OSError`, with `errno` None.
fn os_error(py: Python<'_>, path: String, offset: Option<u64>, source: std::io::Error) -> PyErr {
    let at = at_offset(offset);
    let Some(errno) = source.raw_os_error() else {
        return PyOSError::new_err((py.None(), format!("{source}{at}"), path));
    };
    let strerror = py
        .import("os")
        .and_then(|os| os.call_method1("strerror", (errno,)))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| source.to_string());
    PyOSError::new_err((errno, format!("{strerror}{at}"), path))
}
