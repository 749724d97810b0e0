//! pipemode-core: the data path of pipemode, in plain Rust with no Python in it.
//!
//! Bytes come in through [`source`] (a FIFO or a regular file, waited for within a timeout),
//! are split into records by [`framing`] (RecordIO, TFRecord, TextLine), gathered by a
//! [`BatchBuilder`] into raw [`batch`]es or decoded [`example`] columns, on a reader thread in
//! [`reader`] that runs ahead into a bounded queue. [`writer`] writes the same framings.

pub mod batch;
pub mod error;
pub mod example;
pub mod framing;
pub mod pool;
pub mod reader;
pub mod source;
pub mod writer;

pub use batch::{
    BatchBuilder, Chunks, RecordBatch, RecordBatchBuilder, DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BATCH_BYTES,
};
pub use error::{Error, RecordError, Result};
pub use framing::{Format, Multipart};
pub use reader::{Canceller, PrefetchReader, ReaderCounters, ReaderOptions, ReaderStats};
pub use writer::RecordWriter;
