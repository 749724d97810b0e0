//! `pipemode._native`: the thin PyO3 layer over pipemode-core. It converts types, releases the
//! GIL around every blocking or CPU-heavy call, and maps core errors to the exceptions of
//! `pipemode.errors`. The public API lives in the Python package.
//!
//! It holds no policy of its own: every default is a constant of the core, exported here for
//! the Python signatures (`_native.DEFAULT_*`), and the native classes take every argument
//! without a default. Modules depend one way: `lib.rs` registers everything; `dense_reader`
//! uses `decode` (the spec) and `columns` (blocks to numpy); `decode` uses `columns` and `batch`.

use pipemode_core::example::{
    DEFAULT_BATCHES_PER_BLOCK, DEFAULT_DENSE_BATCH_SIZE, DEFAULT_MAX_BLOCK_BYTES,
};
use pipemode_core::{ReaderOptions, DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_BYTES};
use pyo3::prelude::*;

mod batch;
mod columns;
mod decode;
mod dense_reader;
mod errors;
mod options;
mod reader;
mod reader_base;
mod writer;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    add_defaults(m)?;
    // The readers' base class, there for the type stubs but kept out of __all__.
    m.setattr(
        "_ReaderBase",
        m.py().get_type::<reader_base::PyReaderBase>(),
    )?;
    m.add_class::<batch::PyRecordBatch>()?;
    m.add_class::<reader::PyRecordReader>()?;
    m.add_class::<writer::PyRecordWriter>()?;
    m.add_class::<decode::PyExampleSpec>()?;
    m.add_class::<columns::AlignedColumn>()?;
    m.add_class::<dense_reader::PyDenseReader>()?;
    m.add_function(wrap_pyfunction!(decode::decode_examples, m)?)?;
    m.add_function(wrap_pyfunction!(decode::encode_example, m)?)?;
    Ok(())
}

/// The core's defaults, which the Python signatures read: each is defined once, in the core.
fn add_defaults(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let reader = ReaderOptions::default();
    m.add("DEFAULT_BATCH_SIZE", DEFAULT_BATCH_SIZE)?;
    m.add("DEFAULT_MAX_BATCH_BYTES", DEFAULT_MAX_BATCH_BYTES)?;
    m.add("DEFAULT_BUFFER_SIZE", reader.source.buffer_size)?;
    m.add("DEFAULT_PREFETCH", reader.prefetch)?;
    m.add(
        "DEFAULT_OPEN_TIMEOUT",
        reader.source.open_timeout.map(|t| t.as_secs_f64()),
    )?;
    m.add("DEFAULT_DENSE_BATCH_SIZE", DEFAULT_DENSE_BATCH_SIZE)?;
    m.add("DEFAULT_BATCHES_PER_BLOCK", DEFAULT_BATCHES_PER_BLOCK)?;
    m.add("DEFAULT_MAX_BLOCK_BYTES", DEFAULT_MAX_BLOCK_BYTES)?;
    Ok(())
}
