//! tf.train.Example records decoded into dense, 64-byte aligned columns, with the semantics of
//! `tf.io.parse_example` for `tf.io.FixedLenFeature` (plus `tf.io.decode_raw` of string
//! features): one row per record, every value copied once, from the record into its column.
//!
//! - [`wire`]: the protobuf wire format, read by hand (why: see there).
//! - [`spec`]: which features to decode, with their shapes and defaults.
//! - [`dense_block`]: [`DenseBlockBuilder`], the [`crate::BatchBuilder`] the reader thread
//!   decodes with, and the [`DenseBlock`]s it hands out.
//! - [`columns`]: the column builders that write each record's values into their column.
//! - [`aligned`]: [`AlignedBuf`], the 64-byte aligned column buffer, and its pool: the crate's
//!   only unsafe code, in a room of its own.

pub mod aligned;
pub mod columns;
pub mod dense_block;
pub mod spec;
pub mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use aligned::{AlignedBuf, BufferPool, ALIGN};
pub use columns::Column;
pub use dense_block::{
    DenseBlock, DenseBlockBuilder, DEFAULT_BATCHES_PER_BLOCK, DEFAULT_DENSE_BATCH_SIZE,
    DEFAULT_MAX_BLOCK_BYTES,
};
pub use spec::{DefaultValue, ExampleSpec, FeatureKind, FeatureSpec};
pub use wire::encode::{example as encode_example, Values};

use crate::batch::BatchBuilder;
use crate::error::{Error, RecordError};

/// A record that did not decode: its index among the records given, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The record's index among those given.
    pub record: usize,
    /// Why it did not decode.
    pub error: RecordError,
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::BatchRecord {
            record: e.record,
            message: e.error.0,
        }
    }
}

/// Decodes a batch of records held in memory into one block (`tf.io.parse_example` on a
/// batch), stopping at the first record that does not decode.
pub fn decode_examples<'a>(
    spec: Arc<ExampleSpec>,
    records: impl ExactSizeIterator<Item = &'a [u8]>,
    pool: &BufferPool,
) -> Result<DenseBlock, DecodeError> {
    let mut builder = DenseBlockBuilder::with_pool(spec, records.len(), pool.clone());
    for (record, bytes) in records.enumerate() {
        builder
            .push(bytes)
            .map_err(|error| DecodeError { record, error })?;
    }
    Ok(builder.take())
}
