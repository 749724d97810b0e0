//! A decoded [`DenseBlock`] as Python sees it: a dict `{name: ndarray}`. Numeric arrays keep
//! their data in the Rust-owned column buffers (no copy), 64-byte aligned as TensorFlow needs to
//! adopt a buffer; byte-string columns become object arrays of `bytes`.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use numpy::npyffi::{self, npy_intp, PY_ARRAY_API};
use numpy::{PyArray1, PyArrayDescr, PyArrayDescrMethods, PyArrayMethods};
use pipemode_core::example::{AlignedBuf, BufferPool, Column, DenseBlock, ExampleSpec};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

/// The owner of one numeric column's buffer: the `base` of the numpy array that views it.
/// When the array goes, the buffer goes back to its pool for the next blocks.
#[pyclass(module = "pipemode._native", frozen)]
pub struct AlignedColumn {
    /// Read by numpy through the array's data pointer; `None` only once dropped.
    data: Option<AlignedBuf>,
    pool: BufferPool,
}

impl Drop for AlignedColumn {
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            self.pool.give(data);
        }
    }
}

/// How the blocks of one spec become numpy arrays: per feature, its name (interned once) and
/// numpy dtype (`None` for byte strings).
pub struct BlockLayout {
    spec: Arc<ExampleSpec>,
    names: Vec<Py<PyString>>,
    dtypes: Vec<Option<Py<PyArrayDescr>>>,
}

impl BlockLayout {
    /// The layout of `spec`'s blocks, `dtypes` given in the spec's feature order.
    pub fn new(
        py: Python<'_>,
        spec: Arc<ExampleSpec>,
        dtypes: Vec<Option<Py<PyArrayDescr>>>,
    ) -> Self {
        let names = spec
            .features()
            .iter()
            .map(|f| PyString::new(py, &f.name).unbind())
            .collect();
        Self {
            spec,
            names,
            dtypes,
        }
    }

    /// The feature names, in the order the columns come.
    pub fn names(&self) -> &[Py<PyString>] {
        &self.names
    }

    /// A dict `{name: ndarray}` of `[rows, *shape]` arrays for a decoded block.
    pub fn to_dict<'py>(&self, py: Python<'py>, block: DenseBlock) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        let rows = block.rows;
        let pool = &block.pool;
        let features = self.spec.features();
        for (i, column) in block.columns.into_iter().enumerate() {
            let array = match (column, &self.dtypes[i]) {
                (Column::Numeric { data, row_shape }, Some(dtype)) => {
                    numeric_array(py, data, pool, rows, &row_shape, dtype.bind(py))?
                }
                (Column::Bytes { data, ends }, _) => {
                    bytes_array(py, &data, &ends, rows, &features[i].shape)?
                }
                (Column::Numeric { .. }, None) => unreachable!("numeric columns have a dtype"),
            };
            dict.set_item(self.names[i].bind(py), array)?;
        }
        Ok(dict)
    }
}

/// A numpy array over the column's own buffer, kept alive through the array's `base`.
fn numeric_array<'py>(
    py: Python<'py>,
    data: AlignedBuf,
    pool: &BufferPool,
    rows: usize,
    row_shape: &[usize],
    dtype: &Bound<'py, PyArrayDescr>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims: Vec<npy_intp> = std::iter::once(rows)
        .chain(row_shape.iter().copied())
        .map(|d| d as npy_intp)
        .collect();
    let elements: usize = dims.iter().map(|&d| d as usize).product();
    assert_eq!(elements * dtype.itemsize(), data.len(), "column size");
    let data_ptr = data.as_ptr() as *mut c_void;
    let owner = Bound::new(
        py,
        AlignedColumn {
            data: Some(data),
            pool: pool.clone(),
        },
    )?;
    // SAFETY: `data_ptr` points at `elements` items of `dtype`, C-contiguous, owned by `owner`,
    // which becomes the array's base and so outlives it. NewFromDescr steals a dtype reference
    // (into_dtype_ptr adds one); SetBaseObject steals the owner reference we hand it.
    unsafe {
        let array = PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            npyffi::get_type_object(py, npyffi::NpyTypes::PyArray_Type),
            dtype.clone().into_dtype_ptr(),
            dims.len() as i32,
            dims.as_mut_ptr(),
            ptr::null_mut(),
            data_ptr,
            npyffi::NPY_ARRAY_WRITEABLE
                | npyffi::NPY_ARRAY_C_CONTIGUOUS
                | npyffi::NPY_ARRAY_ALIGNED,
            ptr::null_mut(),
        );
        let array = Bound::from_owned_ptr_or_err(py, array)?;
        if PY_ARRAY_API.PyArray_SetBaseObject(py, array.as_ptr().cast(), owner.into_ptr()) < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(array)
    }
}

/// An object array of `bytes`, shaped `[rows, *shape]` (numpy's stand-in for `tf.string`).
fn bytes_array<'py>(
    py: Python<'py>,
    data: &[u8],
    ends: &[usize],
    rows: usize,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let mut start = 0;
    let strings: Vec<Py<PyAny>> = ends
        .iter()
        .map(|&end| {
            let bytes = PyBytes::new(py, &data[start..end]).into_any().unbind();
            start = end;
            bytes
        })
        .collect();
    let dims: Vec<usize> = std::iter::once(rows).chain(shape.iter().copied()).collect();
    Ok(PyArray1::from_vec(py, strings).reshape(dims)?.into_any())
}
