//! `RecordBatch`: records in one contiguous payload buffer plus `n + 1` offsets, exposed as a
//! sequence of `bytes`, through the buffer protocol, and with the offsets as a numpy array.

use std::ffi::c_int;

use numpy::{PyArray1, PyArrayMethods};
use pipemode_core::RecordBatch;
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList};
use pyo3::{ffi, IntoPyObjectExt};

#[pyclass(name = "RecordBatch", module = "pipemode._native", frozen, sequence)]
pub struct PyRecordBatch {
    batch: RecordBatch,
    offsets: PyOnceLock<Py<PyArray1<i64>>>,
}

impl PyRecordBatch {
    pub fn new(batch: RecordBatch) -> Self {
        PyRecordBatch {
            batch,
            offsets: PyOnceLock::new(),
        }
    }

    /// The batch itself, for native code that reads it with the GIL released.
    pub fn records(&self) -> &RecordBatch {
        &self.batch
    }

    fn record<'py>(&self, py: Python<'py>, index: usize) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.batch.get(index).expect("index checked"))
    }
}

#[pymethods]
impl PyRecordBatch {
    fn __len__(&self) -> usize {
        self.batch.len()
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyBytes>> {
        let len = self.batch.len() as isize;
        let resolved = if index < 0 { index + len } else { index };
        if !(0..len).contains(&resolved) {
            return Err(PyIndexError::new_err(format!(
                "record index {index} out of range for a batch of {len}"
            )));
        }
        Ok(self.record(py, resolved as usize))
    }

    fn __iter__(slf: Bound<'_, Self>) -> RecordBatchIterator {
        RecordBatchIterator {
            batch: slf.unbind(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The record boundaries in the payload buffer: `int64[len + 1]`, starting at 0.
    #[getter]
    fn offsets<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        self.offsets
            .get_or_init(py, || {
                let array = PyArray1::from_slice(py, self.batch.offsets());
                array.readwrite().make_nonwriteable();
                array.unbind()
            })
            .bind(py)
            .clone()
    }

    /// Payload bytes in the batch (framing excluded).
    #[getter]
    fn nbytes(&self) -> usize {
        self.batch.data().len()
    }

    /// All payloads back to back, as one `bytes`.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.batch.data())
    }

    /// The records as a one-dimensional numpy array of `bytes` (dtype object), which
    /// TensorFlow turns into a string tensor of one record per element in one call.
    fn to_array<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<Py<PyAny>>> {
        let records: Vec<Py<PyAny>> = self
            .batch
            .iter()
            .map(|record| PyBytes::new(py, record).into_any().unbind())
            .collect();
        PyArray1::from_vec(py, records)
    }

    /// The records as a list of `bytes`.
    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.batch.iter().map(|record| PyBytes::new(py, record)))
    }

    fn __repr__(&self) -> String {
        format!(
            "RecordBatch(len={}, nbytes={})",
            self.batch.len(),
            self.batch.data().len()
        )
    }

    /// A read-only, one-dimensional byte view of the payload buffer, without a copy.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let data = slf.get().batch.data();
        // SAFETY: the buffer lives as long as the batch, which is immutable (frozen) and kept
        // alive by the view's reference to it; PyBuffer_FillInfo takes that reference.
        let filled = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                data.as_ptr().cast_mut().cast(),
                data.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if filled == -1 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }
}

#[pyclass(module = "pipemode._native", frozen)]
pub struct RecordBatchIterator {
    batch: Py<PyRecordBatch>,
    next: std::sync::atomic::AtomicUsize,
}

#[pymethods]
impl RecordBatchIterator {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let batch = self.batch.get();
        let index = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (index < batch.batch.len()).then(|| {
            batch
                .record(py, index)
                .into_py_any(py)
                .expect("bytes convert")
        })
    }
}
