//! pipemode-core: the data path of pipemode, in plain Rust with no Python in it.
//!
//! Bytes come in through [`source`] (a FIFO or a regular file, waited for within a timeout),
//! are split into records by [`framing`] (RecordIO, TFRecord, TextLine), gathered by a
//! [`BatchBuilder`] into raw [`batch`]es or decoded [`example`] columns, on a reader thread in
//! [`reader`] that runs ahead into a bounded queue. [`writer`] writes the same framings.
//!
//! A [`framing::Framer`] yields each record as a slice of the source's buffer, with its offset:
//!
//! ```
//! use pipemode_core::framing::{Framer, FramingOptions};
//! use pipemode_core::source::Input;
//! use pipemode_core::{Format, RecordWriter};
//!
//! let mut writer = RecordWriter::new(Vec::new(), Format::RecordIo, "memory".into());
//! writer.write_record(b"one")?;
//! writer.write_record(b"two")?;
//! let stream = writer.into_inner()?;
//!
//! let input = Input::from_bytes(stream, "memory");
//! let mut framer = Framer::new(input, Format::RecordIo, FramingOptions::default())?;
//! let first = framer.next_record()?.expect("a record");
//! assert_eq!((first.offset, first.data), (0, &b"one"[..]));
//! // A RecordIO header is 8 bytes and payloads are padded to 4: the second starts at 12.
//! let second = framer.next_record()?.expect("a record");
//! assert_eq!((second.offset, second.data), (12, &b"two"[..]));
//! assert!(framer.next_record()?.is_none());
//! # Ok::<(), pipemode_core::Error>(())
//! ```

#![warn(missing_docs)]

pub mod batch;
pub mod error;
pub mod example;
pub mod framing;
pub mod pool;
pub mod reader;
pub mod source;
pub mod writer;

pub use batch::{
    BatchBuilder, RecordBatch, RecordBatchBuilder, DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_BYTES,
};
pub use error::{Error, RecordError, Result};
pub use framing::{Format, Multipart};
pub use reader::{Canceller, PrefetchReader, ReaderCounters, ReaderOptions, ReaderStats};
pub use writer::RecordWriter;
