//! What the reader thread turns records into. The raw path copies payloads into one contiguous
//! buffer ([`RecordBatch`]); the dense path decodes tf.train.Example records straight into
//! numeric columns (`crate::example`). Both are a [`BatchBuilder`], so the reader thread does
//! framing and batching in one pass and each payload byte is copied once.

use crate::error::RecordError;

/// Accumulates complete records (never a partial one) into batches.
pub trait BatchBuilder: Send + 'static {
    type Batch: Send + 'static;

    /// Adds one complete record. An error rejects that record and ends the stream.
    fn push(&mut self, record: &[u8]) -> Result<(), RecordError>;

    /// Records pushed since the last [`BatchBuilder::take`].
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the current batch should be handed over now.
    fn is_full(&self) -> bool;

    /// Hands over the records pushed so far and starts an empty batch.
    fn take(&mut self) -> Self::Batch;
}
