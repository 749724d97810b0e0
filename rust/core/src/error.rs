//! One error type for everything the core reports. Each variant that is about data carries the
//! stream's name (file path, or channel and path) and a byte offset, because a user with a
//! corrupt 40 GB channel needs to know where to look.

use std::io;
use std::time::Duration;

/// The core's results: [`Error`] unless said otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the core reports, each data error with the stream's name and byte offset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an open, read or write (mid-stream: at `offset`).
    #[error("{path}: {source}{}", at_offset(*offset))]
    Io {
        /// The stream (file path, or channel and path).
        path: String,
        /// Where in the stream the failing read began, for a failure mid-stream.
        offset: Option<u64>,
        /// What the OS said.
        #[source]
        source: io::Error,
    },

    /// A path that never appeared, or a FIFO whose other end never opened, within the timeout.
    #[error("{path}: timed out after {:.1} s waiting for {what}", waited.as_secs_f64())]
    Timeout {
        /// The stream (file path, or channel and path).
        path: String,
        /// What did not come: the path, or the FIFO's writer.
        what: &'static str,
        /// How long the reader waited.
        waited: Duration,
    },

    /// The framing is broken: bad magic, bad CRC, truncated header, payload or multipart
    /// sequence, or a length no sane record has.
    #[error("{path}: corrupt {format} stream at byte offset {offset}: {message}")]
    Corrupt {
        /// The stream (file path, or channel and path).
        path: String,
        /// The record format the stream was read as.
        format: &'static str,
        /// Where the broken record begins.
        offset: u64,
        /// What is broken.
        message: String,
    },

    /// A well-framed record whose content cannot be decoded (for example a tf.train.Example
    /// that lacks a feature the spec requires).
    #[error("{path}: record {record} at byte offset {offset}: {message}")]
    Record {
        /// The stream (file path, or channel and path).
        path: String,
        /// The record's index in the stream, from 0.
        record: u64,
        /// Where the record begins.
        offset: u64,
        /// What is wrong with it.
        message: String,
    },

    /// A record of a batch held in memory (no stream, so no path or offset) whose content
    /// cannot be decoded; `record` is its index in the batch.
    #[error("record {record}: {message}")]
    BatchRecord {
        /// The record's index in the batch given.
        record: usize,
        /// What is wrong with it.
        message: String,
    },

    /// The reader thread panicked: a bug in pipemode, not a problem with the stream or the OS.
    #[error("{path}: the reader thread panicked (a bug in pipemode): {message}")]
    ReaderPanicked {
        /// The stream the thread was reading.
        path: String,
        /// The panic's message, if it had one.
        message: String,
    },

    /// Options that cannot work together, found before any byte is read.
    #[error("{0}")]
    Config(String),
}

impl Error {
    /// The byte offset in the stream that the error is about, when it is about data.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Error::Corrupt { offset, .. } | Error::Record { offset, .. } => Some(*offset),
            Error::Io { offset, .. } => *offset,
            _ => None,
        }
    }

    /// The file (or channel and file) the error is about.
    pub fn path(&self) -> Option<&str> {
        match self {
            Error::Io { path, .. }
            | Error::Timeout { path, .. }
            | Error::Corrupt { path, .. }
            | Error::Record { path, .. }
            | Error::ReaderPanicked { path, .. } => Some(path),
            Error::BatchRecord { .. } | Error::Config(_) => None,
        }
    }
}

/// " at byte offset N", for a read that failed mid-stream.
pub fn at_offset(offset: Option<u64>) -> String {
    offset.map_or_else(String::new, |offset| format!(" at byte offset {offset}"))
}

/// A problem with one well-framed record, found by a [`crate::BatchBuilder`]; the reader adds
/// the stream's name, the record's index and its byte offset to make an [`Error::Record`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(pub String);
