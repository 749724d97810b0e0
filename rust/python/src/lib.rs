//! `pipemode._native`: the thin PyO3 layer over pipemode-core. It converts types, releases the
//! GIL around every blocking or CPU-heavy call, and maps core errors to the exceptions of
//! `pipemode.errors`. The public API lives in the Python package.

use pyo3::prelude::*;

mod batch;
mod decoder;
mod errors;
mod example_reader;
mod options;
mod reader;
mod reader_base;
mod writer;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The readers' base class, there for the type stubs but kept out of __all__.
    m.setattr(
        "_ReaderBase",
        m.py().get_type::<reader_base::PyReaderBase>(),
    )?;
    decoder::register(m)?;
    m.add_class::<batch::PyRecordBatch>()?;
    m.add_class::<reader::PyRecordReader>()?;
    m.add_class::<writer::PyRecordWriter>()?;
    Ok(())
}
