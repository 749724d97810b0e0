//! The Example decoder's binding, the native side of `pipemode.decode`: `ExampleSpec`,
//! `decode_examples` and `encode_example`. Blocks become numpy dicts in [`crate::columns`].

use std::sync::Arc;

use numpy::{PyArrayDescr, PyArrayDescrMethods};
use pipemode_core::example::{
    self, BufferPool, DefaultValue, ExampleSpec, FeatureKind, FeatureSpec, Values,
};
use pipemode_core::Error;

use crate::batch::PyRecordBatch;
use crate::columns::BlockLayout;
use crate::errors::to_pyerr;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// The name of the byte-string kind, in specs and in `encode_example` alike (TF's `tf.string`).
const STRING_KIND: &str = "string";

/// The features to decode, checked once; built by `pipemode.decode` from the user's dict.
#[pyclass(name = "ExampleSpec", module = "pipemode._native", frozen)]
pub struct PyExampleSpec {
    spec: Arc<ExampleSpec>,
    /// Reused column buffers for `decode_examples` calls with this spec.
    pool: BufferPool,
    layout: BlockLayout,
}

impl PyExampleSpec {
    /// The checked spec, for a reader thread to decode with.
    pub fn core(&self) -> &Arc<ExampleSpec> {
        &self.spec
    }

    /// How this spec's blocks become numpy dicts.
    pub fn layout(&self) -> &BlockLayout {
        &self.layout
    }
}

/// One feature as `pipemode.decode` hands it over: name, value kind, shape, flattened default
/// (or None), and the native-order numpy dtype to `decode_raw` a string feature into (or None).
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
            let (kind, dtype) = feature_kind(py, &name, &kind, raw).map_err(|e| to_pyerr(py, e))?;
            let default = default.map(|d| default_value(kind, &d)).transpose()?;
            specs.push(FeatureSpec {
                name,
                kind,
                shape,
                default,
            });
            dtypes.push(dtype);
        }
        let spec = Arc::new(ExampleSpec::new(specs).map_err(|e| to_pyerr(py, e))?);
        Ok(Self {
            pool: BufferPool::new(4 * spec.features().len()),
            layout: BlockLayout::new(py, spec.clone(), dtypes),
            spec,
        })
    }

    /// The feature names, in the order the columns come.
    #[getter]
    fn names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.layout.names())
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

/// The core kind of a feature and the numpy dtype of its column. `decode_raw`'s dtype is checked
/// here and in the core only (`pipemode.decode` just turns TF and numpy spellings into a numpy
/// dtype): here an integer or float in native order, the order the core writes; there its size.
fn feature_kind(
    py: Python<'_>,
    name: &str,
    kind: &str,
    raw: Option<Bound<'_, PyAny>>,
) -> Result<(FeatureKind, Option<Py<PyArrayDescr>>), Error> {
    let spec_error = |problem: String| Error::Config(format!("feature '{name}': {problem}"));
    Ok(match (kind, raw) {
        ("int64", None) => (FeatureKind::Int64, Some(numpy::dtype::<i64>(py).unbind())),
        ("float32", None) => (FeatureKind::Float32, Some(numpy::dtype::<f32>(py).unbind())),
        (STRING_KIND, None) => (FeatureKind::Bytes, None),
        (STRING_KIND, Some(raw)) => {
            let dtype = PyArrayDescr::new(py, raw).map_err(|e| spec_error(e.to_string()))?;
            if !matches!(dtype.kind(), b'i' | b'u' | b'f')
                || dtype.is_native_byteorder() == Some(false)
            {
                return Err(spec_error(format!(
                    "decode_raw into {dtype}: not an integer or float dtype in native byte order"
                )));
            }
            let item_size = dtype.itemsize();
            (FeatureKind::Raw { item_size }, Some(dtype.unbind()))
        }
        (_, Some(_)) => {
            return Err(spec_error(
                "decode_raw applies to string features only".to_string(),
            ))
        }
        (other, None) => return Err(spec_error(format!("unknown kind {other:?}"))),
    })
}

fn default_value(kind: FeatureKind, default: &Bound<'_, PyAny>) -> PyResult<DefaultValue> {
    Ok(match kind {
        FeatureKind::Int64 => DefaultValue::Int64(default.extract()?),
        FeatureKind::Float32 => DefaultValue::Float32(default.extract()?),
        FeatureKind::Bytes | FeatureKind::Raw { .. } => DefaultValue::Bytes(default.extract()?),
    })
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
    let block = block.map_err(|e| to_pyerr(py, e.into()))?;
    spec.layout.to_dict(py, block)
}

/// A tf.train.Example from `[(name, kind, values)]`: kind "string" with a list of `bytes`, or
/// "float32" / "int64" with the values' little-endian bytes. `pipemode.encode_example` builds
/// the list from a dict, so a bad kind or a partial word is a bug there: a `ValueError`, like
/// the binding's other argument errors, not a `pipemode.errors` class.
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
                STRING_KIND => Owned::Bytes(values.extract()?),
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
