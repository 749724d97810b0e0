//! What the reader thread turns records into. The raw path copies payloads into one contiguous
//! buffer ([`RecordBatch`]); the dense path decodes tf.train.Example records straight into
//! numeric columns (`crate::example`). Both are a [`BatchBuilder`], so the reader thread does
//! framing and batching in one pass and each payload byte is copied once.

use crate::error::RecordError;
use crate::pool::Pool;

/// Accumulates complete records (never a partial one) into batches.
pub trait BatchBuilder: Send + 'static {
    /// The batch handed to the consumer.
    type Batch: Send + 'static;

    /// Adds one complete record. An error rejects that record and ends the stream; the records
    /// accepted before it stay in the builder and are still taken and handed over.
    fn push(&mut self, record: &[u8]) -> Result<(), RecordError>;

    /// Records pushed since the last [`BatchBuilder::take`].
    fn len(&self) -> usize;

    /// True when no record is in the batch being built.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the current batch should be handed over now.
    fn is_full(&self) -> bool;

    /// Hands over the oldest records pushed and not yet taken: all of them, or (for a builder
    /// whose batches end at a boundary of its own, like a dense block) the part up to that
    /// boundary. Call it until [`BatchBuilder::is_empty`] to hand over everything.
    fn take(&mut self) -> Self::Batch;
}

/// A batch of raw records: every payload back to back in one buffer, plus `n + 1` offsets
/// (`offsets[0] == 0`, record `i` is `data[offsets[i]..offsets[i + 1]]`). One buffer and one
/// offsets array hand over to Python, numpy or TF without a copy per record.
///
/// ```
/// use pipemode_core::{BatchBuilder, RecordBatchBuilder};
///
/// let mut builder = RecordBatchBuilder::new(2);
/// builder.push(b"first").unwrap();
/// builder.push(b"second").unwrap();
/// assert!(builder.is_full());
/// let batch = builder.take();
/// assert_eq!(batch.offsets(), &[0, 5, 11]);
/// assert_eq!(batch.get(1), Some(&b"second"[..]));
/// assert_eq!(batch.iter().collect::<Vec<_>>(), [&b"first"[..], b"second"]);
/// ```
#[derive(Debug, Default)]
pub struct RecordBatch {
    data: Vec<u8>,
    offsets: Vec<i64>,
    /// Where the payload buffer goes back to when the batch is dropped.
    pool: Option<Pool<Vec<u8>>>,
}

impl PartialEq for RecordBatch {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data && self.offsets == other.offsets
    }
}

impl Eq for RecordBatch {}

impl Clone for RecordBatch {
    fn clone(&self) -> Self {
        RecordBatch {
            data: self.data.clone(),
            offsets: self.offsets.clone(),
            pool: None,
        }
    }
}

impl Drop for RecordBatch {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.data));
        }
    }
}

impl RecordBatch {
    /// Builds a batch from its parts; `offsets` must start at 0, never decrease and end at
    /// `data.len()`.
    pub fn from_parts(data: Vec<u8>, offsets: Vec<i64>) -> Self {
        assert!(offsets.first() == Some(&0), "offsets start at 0");
        assert!(
            offsets.windows(2).all(|w| w[0] <= w[1]),
            "offsets never decrease"
        );
        assert!(
            offsets.last() == Some(&(data.len() as i64)),
            "offsets end at data.len()"
        );
        RecordBatch {
            data,
            offsets,
            pool: None,
        }
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        let start = *self.offsets.get(index)? as usize;
        let end = *self.offsets.get(index + 1)? as usize;
        Some(&self.data[start..end])
    }

    /// All payloads back to back.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The `len() + 1` record boundaries in [`RecordBatch::data`].
    pub fn offsets(&self) -> &[i64] {
        &self.offsets
    }

    /// The records, in order, as slices of the payload buffer.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.offsets
            .windows(2)
            .map(|w| &self.data[w[0] as usize..w[1] as usize])
    }

    /// The payload buffer and the `len() + 1` offsets, taken out of the batch: the caller's
    /// now, they no longer go back to the builder's pool.
    pub fn into_parts(mut self) -> (Vec<u8>, Vec<i64>) {
        self.pool = None;
        (
            std::mem::take(&mut self.data),
            std::mem::take(&mut self.offsets),
        )
    }
}

/// Records per raw batch unless asked otherwise: `batch_size` of `pipemode.RecordReader`,
/// `PipeModeChannel.next_epoch` and the raw `PipeModeDataset`.
pub const DEFAULT_BATCH_SIZE: usize = 1024;

/// Bound on one raw batch's payload unless a single record is larger, so that a queue of
/// batches of large records cannot hold gigabytes.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 16 << 20;

/// Copies each record's payload into a [`RecordBatch`]. A batch is full at `max_records`
/// records or once it holds `max_bytes` of payload, whichever comes first, so large records
/// cannot make a queue of batches hold gigabytes.
#[derive(Debug)]
pub struct RecordBatchBuilder {
    max_records: usize,
    max_bytes: usize,
    data: Vec<u8>,
    offsets: Vec<i64>,
    /// Payload size of the last batch: the next one is likely the same, so its buffer is
    /// allocated once at that size instead of growing by doubling.
    last_nbytes: usize,
    pool: Pool<Vec<u8>>,
}

impl RecordBatchBuilder {
    /// Idle payload buffers kept for reuse (see [`crate::pool`]).
    const POOLED_BUFFERS: usize = 4;

    /// A builder of batches of up to `max_records` records and [`DEFAULT_MAX_BATCH_BYTES`].
    pub fn new(max_records: usize) -> Self {
        Self::with_max_bytes(max_records, DEFAULT_MAX_BATCH_BYTES)
    }

    /// A builder of batches of up to `max_records` records and `max_bytes` of payload (a single
    /// larger record still makes a batch of its own).
    pub fn with_max_bytes(max_records: usize, max_bytes: usize) -> Self {
        let max_records = max_records.max(1);
        RecordBatchBuilder {
            max_records,
            max_bytes,
            data: Vec::new(),
            offsets: Self::fresh_offsets(max_records),
            last_nbytes: 0,
            pool: Pool::new(Self::POOLED_BUFFERS),
        }
    }

    fn fresh_offsets(max_records: usize) -> Vec<i64> {
        let mut offsets = Vec::with_capacity(max_records + 1);
        offsets.push(0);
        offsets
    }
}

impl BatchBuilder for RecordBatchBuilder {
    type Batch = RecordBatch;

    #[inline]
    fn push(&mut self, record: &[u8]) -> Result<(), RecordError> {
        if self.data.capacity() == 0 {
            self.data = self.pool.take(self.last_nbytes.max(record.len()));
        }
        self.data.extend_from_slice(record);
        self.offsets.push(self.data.len() as i64);
        Ok(())
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    #[inline]
    fn is_full(&self) -> bool {
        self.len() >= self.max_records || self.data.len() >= self.max_bytes
    }

    fn take(&mut self) -> RecordBatch {
        self.last_nbytes = self.data.len();
        RecordBatch {
            data: std::mem::take(&mut self.data),
            offsets: std::mem::replace(&mut self.offsets, Self::fresh_offsets(self.max_records)),
            pool: Some(self.pool.clone()),
        }
    }
}
