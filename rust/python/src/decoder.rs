//! The Example decoder's binding: `ExampleSpec`, `decode_examples` and `encode_example`.
//! A decoded block becomes a dict of numpy arrays; numeric arrays keep their data in the
//! Rust-owned column buffers (no copy), 64-byte aligned as TensorFlow needs to adopt a buffer.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use numpy::npyffi::{self, npy_intp, PY_ARRAY_API};
use numpy::{PyArray1, PyArrayDescr, PyArrayDescrMethods, PyArrayMethods};
use pipemode_core::example::{
    self, AlignedBuf, BufferPool, Column, DefaultValue, DenseBlock, ExampleSpec, FeatureKind,
    FeatureSpec, Values,
};

use crate::batch::PyRecordBatch;
use crate::errors::{self, to_pyerr};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

/// The features to decode, checked once; built by `pipemode.decode` from the user's dict.
#[pyclass(name = "ExampleSpec", module = "pipemode._native", frozen)]
pub struct PyExampleSpec {
    spec: Arc<ExampleSpec>,
    /// Reused column buffers for `decode_examples` calls with this spec.
    pool: BufferPool,
    names: Vec<Py<PyString>>,
    /// Per feature, the numpy dtype of its column (`None` for byte strings).
    dtypes: Vec<Option<Py<PyArrayDescr>>>,
}

impl PyExampleSpec {
    pub fn core(&self) -> &Arc<ExampleSpec> {
        &self.spec
    }
}

/// One feature as `pipemode.decode` hands it over: name, value kind, shape, flattened default
/// (or None), and the numpy dtype to `decode_raw` a string feature into (or None).
type FeatureTuple<'py> = (
    String,
    String,
    Vec<usize>,
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyAny>>,
);

#[pymethods]
impl PyExampleSpec {
    #[new]
    fn new(py: Python<'_>, features: Vec<FeatureTuple<'_>>) -> PyResult<Self> {
        let mut specs = Vec::with_capacity(features.len());
        let mut dtypes = Vec::with_capacity(features.len());
        for (name, kind, shape, default, raw) in features {
            let (kind, dtype) = feature_kind(py, &name, &kind, raw)?;
            let default = default.map(|d| default_value(kind, &d)).transpose()?;
            specs.push(FeatureSpec {
                name,
                kind,
                shape,
                default,
            });
            dtypes.push(dtype);
        }
        let spec = ExampleSpec::new(specs).map_err(|e| to_pyerr(py, e))?;
        let names = spec
            .features()
            .iter()
            .map(|f| PyString::new(py, &f.name).unbind())
            .collect();
        Ok(Self {
            pool: BufferPool::new(4 * spec.features().len()),
            spec: Arc::new(spec),
            names,
            dtypes,
        })
    }

    /// The feature names, in the order the columns come.
    #[getter]
    fn names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, &self.names)
    }

    fn __repr__(&self) -> String {
        let features: Vec<String> = self
            .spec
            .features()
            .iter()
            .map(|f| format!("{}: {:?}{:?}", f.name, f.kind, f.shape))
            .collect();
        format!("ExampleSpec({})", features.join(", "))
    }
}

fn feature_kind(
    py: Python<'_>,
    name: &str,
    kind: &str,
    raw: Option<Bound<'_, PyAny>>,
) -> PyResult<(FeatureKind, Option<Py<PyArrayDescr>>)> {
    Ok(match (kind, raw) {
        ("int64", None) => (FeatureKind::Int64, Some(numpy::dtype::<i64>(py).unbind())),
        ("float32", None) => (FeatureKind::Float32, Some(numpy::dtype::<f32>(py).unbind())),
        ("string", None) => (FeatureKind::Bytes, None),
        ("string", Some(raw)) => {
            let dtype = PyArrayDescr::new(py, raw)?;
            if !matches!(dtype.kind(), b'i' | b'u' | b'f')
                || dtype.is_native_byteorder() == Some(false)
            {
                return Err(PyValueError::new_err(format!(
                    "feature '{name}': decode_raw needs a native-order integer or float dtype, \
                     not {dtype}"
                )));
            }
            let item_size = dtype.itemsize();
            (FeatureKind::Raw { item_size }, Some(dtype.unbind()))
        }
        (_, Some(_)) => {
            return Err(PyValueError::new_err(format!(
                "feature '{name}': decode_raw applies to string features only"
            )))
        }
        (other, None) => {
            return Err(PyValueError::new_err(format!(
                "feature '{name}': unknown kind {other:?}"
            )))
        }
    })
}

fn default_value(kind: FeatureKind, default: &Bound<'_, PyAny>) -> PyResult<DefaultValue> {
    Ok(match kind {
        FeatureKind::Int64 => DefaultValue::Int64(default.extract()?),
        FeatureKind::Float32 => DefaultValue::Float32(default.extract()?),
        FeatureKind::Bytes | FeatureKind::Raw { .. } => DefaultValue::Bytes(default.extract()?),
    })
}

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

/// A dict `{name: ndarray}` of `[rows, *shape]` arrays for a decoded block.
pub fn block_to_dict<'py>(
    py: Python<'py>,
    spec: &PyExampleSpec,
    block: DenseBlock,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let rows = block.rows;
    let pool = &block.pool;
    let features = spec.spec.features();
    for (i, column) in block.columns.into_iter().enumerate() {
        let array = match (column, &spec.dtypes[i]) {
            (Column::Numeric { data, row_shape }, Some(dtype)) => {
                numeric_array(py, data, pool, rows, &row_shape, dtype.bind(py))?
            }
            (Column::Bytes { data, ends }, _) => {
                bytes_array(py, &data, &ends, rows, &features[i].shape)?
            }
            (Column::Numeric { .. }, None) => unreachable!("numeric columns have a dtype"),
        };
        dict.set_item(spec.names[i].bind(py), array)?;
    }
    Ok(dict)
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

/// Decodes records held in memory (a `RecordBatch`, or any sequence of `bytes`) into one block,
/// as `tf.io.parse_example` does on a batch, with the GIL released while decoding.
#[pyfunction]
pub fn decode_examples<'py>(
    py: Python<'py>,
    records: &Bound<'py, PyAny>,
    spec: &PyExampleSpec,
) -> PyResult<Bound<'py, PyDict>> {
    let block = if let Ok(batch) = records.cast::<PyRecordBatch>() {
        // Frozen and owned by the batch object held here: safe to read without the GIL.
        let batch = batch.get().records();
        let spec_arc = spec.spec.clone();
        py.detach(|| example::decode_examples(spec_arc, batch.iter(), &spec.pool))
    } else {
        let items: Vec<Bound<'py, PyBytes>> = records
            .try_iter()?
            .map(|item| {
                item?.cast_into::<PyBytes>().map_err(|e| {
                    PyTypeError::new_err(format!(
                        "records must be bytes, found {}",
                        e.into_inner().get_type()
                    ))
                })
            })
            .collect::<PyResult<_>>()?;
        let slices: Vec<&[u8]> = items.iter().map(|b| b.as_bytes()).collect();
        let spec_arc = spec.spec.clone();
        py.detach(|| example::decode_examples(spec_arc, slices.iter().copied(), &spec.pool))
    };
    let block = block.map_err(|e| decode_error(py, e.record, &e.error.0))?;
    block_to_dict(py, spec, block)
}

/// `RecordDecodeError` for a record of an in-memory batch: no stream, so no path or offset.
fn decode_error(py: Python<'_>, record: usize, message: &str) -> PyErr {
    errors::record_decode_error(py, format!("record {record}: {message}"), record)
}

/// A tf.train.Example from `[(name, kind, values)]`: kind "bytes" with a list of `bytes`, or
/// "float32" / "int64" with the values' little-endian bytes. `pipemode.encode_example` builds
/// the list from a dict.
#[pyfunction]
pub fn encode_example<'py>(
    py: Python<'py>,
    features: Vec<(Vec<u8>, String, Bound<'py, PyAny>)>,
) -> PyResult<Bound<'py, PyBytes>> {
    enum Owned {
        Bytes(Vec<Vec<u8>>),
        Float32(Vec<f32>),
        Int64(Vec<i64>),
    }
    let owned: Vec<Owned> = features
        .iter()
        .map(|(name, kind, values)| {
            Ok(match kind.as_str() {
                "bytes" => Owned::Bytes(values.extract()?),
                "float32" => Owned::Float32(le_words(values, f32::from_le_bytes)?),
                "int64" => Owned::Int64(le_words(values, i64::from_le_bytes)?),
                other => {
                    return Err(PyValueError::new_err(format!(
                        "feature {:?}: unknown kind {other:?}",
                        String::from_utf8_lossy(name)
                    )))
                }
            })
        })
        .collect::<PyResult<_>>()?;
    let refs: Vec<Vec<&[u8]>> = owned
        .iter()
        .map(|o| match o {
            Owned::Bytes(v) => v.iter().map(Vec::as_slice).collect(),
            _ => Vec::new(),
        })
        .collect();
    let entries: Vec<(&[u8], Values<'_>)> = features
        .iter()
        .zip(&owned)
        .zip(&refs)
        .map(|(((name, _, _), values), refs)| {
            let values = match values {
                Owned::Bytes(_) => Values::Bytes(refs),
                Owned::Float32(v) => Values::Float32(v),
                Owned::Int64(v) => Values::Int64(v),
            };
            (name.as_slice(), values)
        })
        .collect();
    Ok(PyBytes::new(py, &example::encode_example(&entries)))
}

fn le_words<T, const N: usize>(
    values: &Bound<'_, PyAny>,
    from_le: fn([u8; N]) -> T,
) -> PyResult<Vec<T>> {
    let bytes = values.cast::<PyBytes>()?.as_bytes();
    if bytes.len() % N != 0 {
        return Err(PyValueError::new_err("values are not whole words"));
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| from_le(c.try_into().expect("exact chunk")))
        .collect())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyExampleSpec>()?;
    m.add_class::<crate::example_reader::PyExampleReader>()?;
    m.add_class::<AlignedColumn>()?;
    m.add_function(wrap_pyfunction!(decode_examples, m)?)?;
    m.add_function(wrap_pyfunction!(encode_example, m)?)?;
    Ok(())
}
