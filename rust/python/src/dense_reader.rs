//! `DenseReader` (the native side of `pipemode.DenseReader`): a [`PrefetchReader`] whose
//! [`DenseBlockBuilder`] decodes tf.train.Example records into dense blocks on the reader
//! thread, so Python receives ready numpy columns, one call per block.

use std::path::PathBuf;
use std::sync::Arc;

use pipemode_core::example::{DenseBlockBuilder, ExampleSpec, DEFAULT_MAX_BLOCK_BYTES};
use pipemode_core::{Error, PrefetchReader};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::decode::PyExampleSpec;
use crate::errors::to_pyerr;
use crate::options::{positive, ReaderArgs};
use crate::reader_base::{PyReaderBase, SharedReader};

/// Every argument is required: `pipemode.DenseReader` passes them all, with the
/// defaults the core defines and `_native` exports (see `lib.rs`).
#[pyclass(name = "DenseReader", module = "pipemode._native", extends = PyReaderBase, frozen)]
pub struct PyDenseReader {
    reader: Arc<SharedReader<DenseBlockBuilder>>,
    spec: Py<PyExampleSpec>,
    batch_size: usize,
    batches_per_block: usize,
}

#[pymethods]
impl PyDenseReader {
    #[new]
    #[pyo3(signature = (
        path,
        record_format,
        spec,
        *,
        batch_size,
        batches_per_block,
        max_corrupted_records_to_skip,
        multipart,
        open_timeout,
        name,
        buffer_size,
        prefetch,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        record_format: &str,
        spec: Bound<'_, PyExampleSpec>,
        batch_size: i64,
        batches_per_block: i64,
        max_corrupted_records_to_skip: i64,
        multipart: &str,
        open_timeout: Option<f64>,
        name: Option<String>,
        buffer_size: i64,
        prefetch: i64,
    ) -> PyResult<PyClassInitializer<Self>> {
        let core_spec: Arc<ExampleSpec> = spec.get().core().clone();
        let build = || -> Result<PyClassInitializer<Self>, Error> {
            let options = ReaderArgs {
                record_format,
                max_corrupted_records_to_skip,
                multipart,
                open_timeout,
                name,
                buffer_size,
                prefetch,
            }
            .parse()?;
            let batch_size = positive("batch_size", batch_size)?;
            let batches_per_block = positive("batches_per_block", batches_per_block)?;
            let rows = batch_size.checked_mul(batches_per_block).ok_or_else(|| {
                Error::Config("batch_size * batches_per_block is too large".to_string())
            })?;
            let builder = DenseBlockBuilder::new(core_spec, rows)
                .with_batch_size(batch_size)
                .with_max_block_bytes(DEFAULT_MAX_BLOCK_BYTES);
            let reader = PrefetchReader::new(path, options, builder)?;
            let (reader, base) = SharedReader::new(reader);
            Ok(PyClassInitializer::from(base).add_subclass(PyDenseReader {
                reader,
                spec: spec.clone().unbind(),
                batch_size,
                batches_per_block,
            }))
        };
        build().map_err(|e| to_pyerr(py, e))
    }

    /// The next block of decoded records as `{name: ndarray}`: whole batches of `batch_size`,
    /// up to `batches_per_block` of them, ending early after the batch that reaches the 2 MiB
    /// block cap or where a `decode_raw` string size changes (the last block of a stream may
    /// end with a shorter batch). None at the end, and after an error or `close`.
    fn next_block<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        match self.reader.next_batch(py)? {
            Some(block) => self.spec.get().layout().to_dict(py, block).map(Some),
            None => Ok(None),
        }
    }

    #[getter]
    fn spec(&self, py: Python<'_>) -> Py<PyExampleSpec> {
        self.spec.clone_ref(py)
    }

    #[getter]
    fn batch_size(&self) -> usize {
        self.batch_size
    }

    #[getter]
    fn batches_per_block(&self) -> usize {
        self.batches_per_block
    }
}
