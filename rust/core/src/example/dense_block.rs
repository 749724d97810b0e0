//! [`DenseBlockBuilder`], the [`BatchBuilder`] the reader thread decodes Examples with, and the
//! [`DenseBlock`]s it hands out: one row per record, whole batches per block.

use std::sync::Arc;

use super::aligned::BufferPool;
use super::columns::{BlockSize, Column, ColumnBuilder};
use super::spec::{ExampleSpec, FeatureKind};
use super::wire::{self, FeatureList};
use crate::batch::BatchBuilder;
use crate::error::RecordError;

/// What a reader's blocks are capped at: small enough that the columns being written stay in the
/// core's 2 MiB L2 cache and their pooled buffers come back warm. Through PipeModeDataset on the
/// tutorial's 8 KB records, blocks of 256 rows ran 10-20% faster than blocks of 1024 (4 runs of
/// 288k records each, 2-core Xeon); 128 rows cost more per record again (Python per block).
pub const DEFAULT_MAX_BLOCK_BYTES: usize = 2 << 20;

/// Rows per dense batch unless asked otherwise: the tutorial's `batch(64)`.
pub const DEFAULT_DENSE_BATCH_SIZE: usize = 64;

/// Dense batches per block unless asked otherwise; [`DEFAULT_MAX_BLOCK_BYTES`] usually ends a
/// block of large records first.
pub const DEFAULT_BATCHES_PER_BLOCK: usize = 16;

/// Decoded records: one [`Column`] per feature of the spec, in the spec's order.
#[derive(Debug)]
pub struct DenseBlock {
    /// Rows (records) in the block.
    pub rows: usize,
    /// One column per feature, in the spec's order.
    pub columns: Vec<Column>,
    /// Where the numeric columns' buffers go back once done with.
    pub pool: BufferPool,
}

/// Decodes tf.train.Example records into a [`DenseBlock`] of `rows_per_block` rows, as
/// `tf.io.parse_example` (and `tf.io.decode_raw`) would. Per record it allocates nothing: values
/// are copied from the record straight into their column.
///
/// TF's `decode_raw` needs one string size per call, i.e. per batch. A block holds several
/// batches, so when a record's size differs where a new batch would start, the block ends
/// early there and the record starts the next one (see [`DenseBlockBuilder::with_batch_size`]).
pub struct DenseBlockBuilder {
    spec: Arc<ExampleSpec>,
    rows_per_block: usize,
    /// Rows per batch: a block may end early only after a whole number of batches.
    batch_rows: usize,
    /// A block ends after the batch that brings its columns to this many bytes.
    max_block_bytes: usize,
    rows: usize,
    /// A block ended early, waiting to be taken.
    pending: Option<DenseBlock>,
    columns: Vec<ColumnBuilder>,
    /// Per feature, where in the current record its last non-empty `Feature` lies.
    found: Vec<Option<(usize, usize)>>,
    pool: BufferPool,
}

impl DenseBlockBuilder {
    /// A builder with its own pool, holding up to four idle buffers per column.
    pub fn new(spec: Arc<ExampleSpec>, rows_per_block: usize) -> Self {
        let pool = BufferPool::new(4 * spec.features().len());
        Self::with_pool(spec, rows_per_block, pool)
    }

    /// A builder that takes its column buffers from `pool` and gives them back there, so that
    /// builders and `decode_examples` calls with one spec share their buffers.
    pub fn with_pool(spec: Arc<ExampleSpec>, rows_per_block: usize, pool: BufferPool) -> Self {
        let rows_per_block = rows_per_block.max(1);
        let found = vec![None; spec.features().len()];
        Self {
            spec,
            rows_per_block,
            batch_rows: rows_per_block,
            max_block_bytes: usize::MAX,
            rows: 0,
            pending: None,
            // Made on the first push or take, once the `with_` options that size them are set.
            columns: Vec::new(),
            found,
            pool,
        }
    }

    /// Lets a block end after any whole number of `batch_size` rows when `decode_raw` strings
    /// change size there; without it, string sizes must agree within a whole block.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_rows = batch_size.clamp(1, self.rows_per_block);
        self
    }

    /// Ends a block after the batch that brings it to `max_block_bytes`, even before
    /// `rows_per_block` rows (see [`DEFAULT_MAX_BLOCK_BYTES`]).
    pub fn with_max_block_bytes(mut self, max_block_bytes: usize) -> Self {
        self.max_block_bytes = max_block_bytes;
        self
    }

    /// The bytes the current block's columns hold.
    fn block_bytes(&self) -> usize {
        self.columns.iter().map(ColumnBuilder::nbytes).sum()
    }

    fn make_first_columns(&mut self) {
        if self.columns.len() != self.spec.features().len() {
            self.columns = self.empty_columns();
        }
    }

    fn empty_columns(&self) -> Vec<ColumnBuilder> {
        let block = BlockSize {
            rows: self.rows_per_block,
            batch_rows: self.batch_rows,
            max_bytes: self.max_block_bytes,
        };
        self.spec
            .features()
            .iter()
            .map(|feature| ColumnBuilder::new(feature, block, &self.pool))
            .collect()
    }

    /// The spec the builder decodes with.
    pub fn spec(&self) -> &ExampleSpec {
        &self.spec
    }

    fn locate_features(&mut self, record: &[u8]) -> Result<(), RecordError> {
        self.found.fill(None);
        let (spec, found) = (&self.spec, &mut self.found);
        let base = record.as_ptr() as usize;
        wire::for_each_entry(record, |name, feature| {
            // TF: the last occurrence of a name wins, and an empty Feature does not count.
            if feature.is_empty() {
                return;
            }
            if let Some(i) = spec.position(name) {
                // TF reads the kind of every occurrence, not only the last: one of an unknown
                // kind fails the record, so it stays for write_row to report.
                let unknown_kept = found[i].is_some_and(|(start, len)| {
                    !FeatureList::has_known_kind(&record[start..start + len])
                });
                if !unknown_kept {
                    found[i] = Some((feature.as_ptr() as usize - base, feature.len()));
                }
            }
        })
        .map_err(|e| RecordError(format!("not a valid tf.train.Example: {e}")))
    }

    /// Writes the located features as the next row, or leaves the columns as they were.
    fn write_row(&mut self, record: &[u8]) -> Result<(), RecordError> {
        let row = self.rows;
        for (i, feature) in self.spec.features().iter().enumerate() {
            let value = self.found[i].map(|(start, len)| &record[start..start + len]);
            if let Err(error) = self.columns[i].write_row(feature, row, value, &self.pool) {
                for (column, feature) in self.columns.iter_mut().zip(self.spec.features()) {
                    column.truncate(row, feature);
                }
                return Err(error);
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// The only state a row carries to the next is a `decode_raw` string size, and a new batch
    /// may change it: at a batch boundary, a record that fails here is retried in a new block.
    fn may_start_new_block(&self) -> bool {
        self.rows > 0
            && self.rows.is_multiple_of(self.batch_rows)
            && self.pending.is_none()
            && self
                .spec
                .features()
                .iter()
                .any(|f| matches!(f.kind, FeatureKind::Raw { .. }))
    }

    /// Ends the block before `record` and starts the next with it, if it decodes there.
    fn start_new_block_with(&mut self, record: &[u8]) -> Result<(), RecordError> {
        let fresh = self.empty_columns();
        let full = std::mem::replace(&mut self.columns, fresh);
        let rows = std::mem::take(&mut self.rows);
        if let Err(error) = self.write_row(record) {
            self.columns = full;
            self.rows = rows;
            return Err(error);
        }
        self.pending = Some(self.finish(full, rows));
        Ok(())
    }

    fn finish(&self, columns: Vec<ColumnBuilder>, rows: usize) -> DenseBlock {
        DenseBlock {
            rows,
            columns: columns
                .into_iter()
                .zip(self.spec.features())
                .map(|(column, feature)| column.finish(feature))
                .collect(),
            pool: self.pool.clone(),
        }
    }
}

impl BatchBuilder for DenseBlockBuilder {
    type Batch = DenseBlock;

    fn push(&mut self, record: &[u8]) -> Result<(), RecordError> {
        self.make_first_columns();
        self.locate_features(record)?;
        match self.write_row(record) {
            Err(_) if self.may_start_new_block() => self.start_new_block_with(record),
            result => result,
        }
    }

    fn len(&self) -> usize {
        self.rows + self.pending.as_ref().map_or(0, |block| block.rows)
    }

    fn is_full(&self) -> bool {
        self.pending.is_some()
            || self.rows >= self.rows_per_block
            || (self.rows > 0
                && self.rows.is_multiple_of(self.batch_rows)
                && self.block_bytes() >= self.max_block_bytes)
    }

    /// The block ended early if there is one, else the current block.
    fn take(&mut self) -> DenseBlock {
        if let Some(block) = self.pending.take() {
            return block;
        }
        self.make_first_columns();
        let fresh = self.empty_columns();
        let built = std::mem::replace(&mut self.columns, fresh);
        let rows = std::mem::take(&mut self.rows);
        self.finish(built, rows)
    }
}
