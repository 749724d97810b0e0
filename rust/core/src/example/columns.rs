//! Dense columns and the builder that decodes Examples into them, one row per record.
//!
//! Numeric columns live in 64-byte aligned buffers: TensorFlow adopts a numpy array without a
//! copy only when its data is 64-byte aligned, and numpy's own allocator promises 16.

use std::alloc::{self, Layout};
use std::ptr::NonNull;
use std::sync::Arc;

use super::spec::{DefaultValue, ExampleSpec, FeatureKind, FeatureSpec};
use super::wire::{self, BadList, FeatureList};
use crate::batch::BatchBuilder;
use crate::error::RecordError;
use crate::pool::{Pool, Reusable};

/// The alignment of every numeric column.
pub const ALIGN: usize = 64;

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

/// The most a column reserves before data arrives. A block's size comes from the spec, not the
/// data, but a huge shape must not reserve terabytes up front: beyond this, columns grow as
/// values actually arrive.
const MAX_RESERVATION: usize = 256 << 20;

/// How large a block may grow, which sizes its columns before data arrives.
#[derive(Debug, Clone, Copy)]
struct BlockSize {
    rows: usize,
    batch_rows: usize,
    max_bytes: usize,
}

impl BlockSize {
    /// Bytes to reserve for a column of `row_bytes` per row: room for the block's rows, but not
    /// for more batches than this column alone needs to reach the block's byte cap.
    fn reservation(&self, row_bytes: usize) -> usize {
        let rows_to_cap = self
            .max_bytes
            .div_ceil(row_bytes.max(1))
            .checked_next_multiple_of(self.batch_rows)
            .unwrap_or(usize::MAX);
        let rows = self.rows.min(rows_to_cap);
        rows.saturating_mul(row_bytes).min(MAX_RESERVATION)
    }
}

/// A growable, zero-initialised byte buffer whose start is [`ALIGN`]-byte aligned.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: AlignedBuf owns its allocation outright, like a Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    pub fn with_capacity(capacity: usize) -> Self {
        // Never a zero-sized allocation, so even an empty column has an aligned, real address.
        let capacity = capacity.max(ALIGN);
        let layout = Self::layout(capacity);
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Self {
            ptr,
            len: 0,
            capacity,
        }
    }

    fn layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, ALIGN).expect("column buffer size overflows isize")
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are allocated and initialised (zeroed at allocation).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Sets the length, growing the allocation (doubling) when needed. Bytes past the old length
    /// are zero or left over from earlier writes; callers overwrite them.
    pub fn set_len(&mut self, len: usize) {
        if len > self.capacity {
            self.grow(len.max(self.capacity.saturating_mul(2)));
        }
        self.len = len;
    }

    fn grow(&mut self, capacity: usize) {
        let old = Self::layout(self.capacity);
        // Checked first: realloc requires the new size, rounded up to ALIGN, to fit an isize.
        let new = Self::layout(capacity);
        // SAFETY: `ptr` was allocated with `old`; `new` has the same alignment and a valid,
        // non-zero size.
        let ptr = unsafe { alloc::realloc(self.ptr.as_ptr(), old, new.size()) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(new));
        // SAFETY: the bytes from the old capacity to the new one are allocated and ours.
        unsafe {
            ptr.as_ptr()
                .add(self.capacity)
                .write_bytes(0, capacity - self.capacity)
        };
        self.ptr = ptr;
        self.capacity = capacity;
    }

    /// The bytes `range` of the buffer, which must lie within its length.
    pub fn slice_mut(&mut self, start: usize, len: usize) -> &mut [u8] {
        let end = start.checked_add(len);
        assert!(
            end.is_some_and(|end| end <= self.len),
            "write past the end of a column"
        );
        // SAFETY: checked just above; the bytes are initialised.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(start), len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `with_capacity`/`grow` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

impl Reusable for AlignedBuf {
    fn with_capacity(capacity: usize) -> Self {
        AlignedBuf::with_capacity(capacity)
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn reuse(&mut self, capacity: usize) {
        self.len = 0;
        if capacity > self.capacity {
            self.grow(capacity);
        }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

/// Column buffers given back once nothing views them (Python drops the arrays), for later
/// blocks to reuse; a reused buffer is also initialised already, so it needs no zeroing.
pub type BufferPool = Pool<AlignedBuf>;

/// One decoded column of a block.
#[derive(Debug)]
pub enum Column {
    /// Native-endian numbers, row after row; `row_shape` is the shape of one row's values
    /// (the feature's shape, plus the item count for `decode_raw`).
    Numeric {
        data: AlignedBuf,
        row_shape: Vec<usize>,
    },
    /// Byte strings, row-major: string `i` is `data[ends[i - 1]..ends[i]]` (from 0 for `i = 0`).
    Bytes { data: Vec<u8>, ends: Vec<usize> },
}

/// Decoded records: one [`Column`] per feature of the spec, in the spec's order.
#[derive(Debug)]
pub struct DenseBlock {
    pub rows: usize,
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
                found[i] = Some((feature.as_ptr() as usize - base, feature.len()));
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

/// A column being filled, with what it needs to fill a row fast.
enum ColumnBuilder {
    Numeric {
        data: AlignedBuf,
        row_bytes: usize,
        /// The default row, already in column bytes.
        default: Option<Vec<u8>>,
    },
    Bytes {
        data: Vec<u8>,
        ends: Vec<usize>,
        per_row: usize,
    },
    Raw {
        data: AlignedBuf,
        /// Bytes per string, fixed by the block's first string (TF: per decode_raw call).
        width: Option<usize>,
        block: BlockSize,
    },
}

impl ColumnBuilder {
    fn new(feature: &FeatureSpec, block: BlockSize, pool: &BufferPool) -> Self {
        let values = feature.values_per_record();
        match feature.kind {
            FeatureKind::Int64 | FeatureKind::Float32 => {
                let row_bytes = values * feature.kind.item_size().expect("numeric");
                ColumnBuilder::Numeric {
                    data: pool.take(block.reservation(row_bytes)),
                    row_bytes,
                    default: feature.default.as_ref().map(default_bytes),
                }
            }
            FeatureKind::Bytes => {
                let word = std::mem::size_of::<usize>();
                ColumnBuilder::Bytes {
                    data: Vec::new(),
                    ends: Vec::with_capacity(block.reservation(values * word) / word),
                    per_row: values,
                }
            }
            FeatureKind::Raw { .. } => ColumnBuilder::Raw {
                data: AlignedBuf::with_capacity(0),
                width: None,
                block,
            },
        }
    }

    fn nbytes(&self) -> usize {
        match self {
            ColumnBuilder::Numeric { data, .. } | ColumnBuilder::Raw { data, .. } => data.len(),
            ColumnBuilder::Bytes { data, ends, .. } => {
                data.len() + ends.len() * std::mem::size_of::<usize>()
            }
        }
    }

    /// Drops whatever a failed record wrote past the first `rows` rows.
    fn truncate(&mut self, rows: usize, feature: &FeatureSpec) {
        match self {
            ColumnBuilder::Numeric {
                data, row_bytes, ..
            } => data.set_len(rows * *row_bytes),
            ColumnBuilder::Bytes {
                data,
                ends,
                per_row,
            } => {
                ends.truncate(rows * *per_row);
                data.truncate(ends.last().copied().unwrap_or(0));
            }
            ColumnBuilder::Raw { data, width, .. } => {
                if rows == 0 {
                    *width = None;
                }
                let row_bytes = feature.values_per_record() * width.unwrap_or(0);
                data.set_len(rows * row_bytes);
            }
        }
    }

    fn write_row(
        &mut self,
        feature: &FeatureSpec,
        row: usize,
        value: Option<&[u8]>,
        pool: &BufferPool,
    ) -> Result<(), RecordError> {
        let list = value_list(feature, value)?;
        match (self, feature.kind) {
            (
                ColumnBuilder::Numeric {
                    data,
                    row_bytes,
                    default,
                },
                _,
            ) => write_numeric(feature, list, data, row, *row_bytes, default.as_deref()),
            (ColumnBuilder::Bytes { data, ends, .. }, _) => {
                push_strings(feature, strings(feature, list)?, data, ends)
            }
            (ColumnBuilder::Raw { data, width, block }, FeatureKind::Raw { item_size }) => {
                let mut raw = RawRow {
                    feature,
                    item_size,
                    data,
                    width,
                    block: *block,
                    row,
                    pool,
                };
                raw.write(strings(feature, list)?)
            }
            (ColumnBuilder::Raw { .. }, _) => unreachable!("a raw column for a non-raw feature"),
        }
    }

    fn finish(self, feature: &FeatureSpec) -> Column {
        match self {
            ColumnBuilder::Numeric { data, .. } => Column::Numeric {
                data,
                row_shape: feature.shape.clone(),
            },
            ColumnBuilder::Bytes { data, ends, .. } => Column::Bytes { data, ends },
            ColumnBuilder::Raw { data, width, .. } => {
                let FeatureKind::Raw { item_size } = feature.kind else {
                    unreachable!("a raw column for a non-raw feature")
                };
                let mut row_shape = feature.shape.clone();
                row_shape.push(width.unwrap_or(0) / item_size);
                Column::Numeric { data, row_shape }
            }
        }
    }
}

fn value_list<'v>(
    feature: &FeatureSpec,
    value: Option<&'v [u8]>,
) -> Result<FeatureList<'v>, RecordError> {
    let Some(bytes) = value else {
        return Ok(FeatureList::Absent);
    };
    FeatureList::parse(bytes).map_err(|e| {
        let message = format!(
            "its Feature holds no known value list (first byte 0x{:02x})",
            e.0
        );
        record_error(feature, message)
    })
}

/// Writes row `row` of an int64 or float32 column: the list's values, or the default row.
fn write_numeric(
    feature: &FeatureSpec,
    list: FeatureList<'_>,
    data: &mut AlignedBuf,
    row: usize,
    row_bytes: usize,
    default: Option<&[u8]>,
) -> Result<(), RecordError> {
    // The row is made only for a list that can fill it: values take at least a byte each on
    // the wire, so a shorter list is a count error, reported without first growing the column
    // to a row that a huge shape makes terabytes long.
    let can_fill = match list {
        FeatureList::Absent => default.is_some(),
        FeatureList::Int64(body) | FeatureList::Float(body) => {
            row_bytes <= body.len().saturating_mul(8)
        }
        FeatureList::Bytes(_) => false,
    };
    let out: &mut [u8] = if can_fill {
        data.set_len((row + 1) * row_bytes);
        data.slice_mut(row * row_bytes, row_bytes)
    } else {
        &mut []
    };
    match (list, feature.kind) {
        (FeatureList::Absent, _) => match default {
            Some(default) => {
                out.copy_from_slice(default);
                Ok(())
            }
            None => Err(missing(feature)),
        },
        (FeatureList::Int64(body), FeatureKind::Int64) => write_int64s(feature, body, out),
        (FeatureList::Float(body), FeatureKind::Float32) => write_floats(feature, body, out),
        (other, _) => Err(wrong_kind(feature, other)),
    }
}

/// The strings of a bytes feature's row: its list on the wire, else its default. An enum
/// rather than a boxed iterator: this runs for every record.
enum Strings<'a> {
    Default(std::slice::Iter<'a, Vec<u8>>),
    Wire(wire::BytesValues<'a>),
}

impl<'a> Iterator for Strings<'a> {
    type Item = Result<&'a [u8], BadList>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Strings::Default(values) => values.next().map(|v| Ok(v.as_slice())),
            Strings::Wire(values) => values.next(),
        }
    }
}

fn strings<'a>(
    feature: &'a FeatureSpec,
    list: FeatureList<'a>,
) -> Result<Strings<'a>, RecordError> {
    match list {
        FeatureList::Absent => match &feature.default {
            Some(DefaultValue::Bytes(values)) => Ok(Strings::Default(values.iter())),
            _ => Err(missing(feature)),
        },
        FeatureList::Bytes(body) => wire::parse_bytes(body)
            .map(Strings::Wire)
            .map_err(|BadList| unparsable(feature)),
        other => Err(wrong_kind(feature, other)),
    }
}

fn write_int64s(feature: &FeatureSpec, body: &[u8], out: &mut [u8]) -> Result<(), RecordError> {
    let values = wire::parse_int64s(body).map_err(|BadList| unparsable(feature))?;
    let mut slots = out.chunks_exact_mut(8);
    let mut found = 0;
    for value in values {
        let value = value.map_err(|BadList| unparsable(feature))?;
        if let Some(slot) = slots.next() {
            slot.copy_from_slice(&value.to_ne_bytes());
        }
        found += 1;
    }
    check_count(feature, found)
}

fn write_floats(feature: &FeatureSpec, body: &[u8], out: &mut [u8]) -> Result<(), RecordError> {
    let values = wire::parse_floats(body).map_err(|BadList| unparsable(feature))?;
    check_count(feature, values.len())?;
    values.copy_to(out);
    Ok(())
}

fn push_strings<'v>(
    feature: &FeatureSpec,
    values: impl Iterator<Item = Result<&'v [u8], BadList>>,
    data: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Result<(), RecordError> {
    let start = ends.len();
    for value in values {
        data.extend_from_slice(value.map_err(|BadList| unparsable(feature))?);
        ends.push(data.len());
    }
    check_count(feature, ends.len() - start)
}

/// One row of a `decode_raw` column being written.
struct RawRow<'c> {
    feature: &'c FeatureSpec,
    item_size: usize,
    data: &'c mut AlignedBuf,
    width: &'c mut Option<usize>,
    block: BlockSize,
    row: usize,
    pool: &'c BufferPool,
}

impl RawRow<'_> {
    fn write<'v>(
        &mut self,
        values: impl Iterator<Item = Result<&'v [u8], BadList>>,
    ) -> Result<(), RecordError> {
        let n = self.feature.values_per_record();
        let mut found = 0;
        for value in values {
            let value = value.map_err(|BadList| unparsable(self.feature))?;
            let width = self.width_for(value.len())?;
            if found < n {
                let start = (self.row * n + found) * width;
                self.data.set_len(self.data.len().max(start + width));
                let out = self.data.slice_mut(start, width);
                match self.item_size {
                    2 => wire::copy_le_words::<2>(value, out),
                    4 => wire::copy_le_words::<4>(value, out),
                    8 => wire::copy_le_words::<8>(value, out),
                    _ => wire::copy_le_words::<1>(value, out),
                }
            }
            found += 1;
        }
        check_count(self.feature, found)
    }

    /// Checks a string's length against the block's width, fixing the width on the first one.
    fn width_for(&mut self, len: usize) -> Result<usize, RecordError> {
        match *self.width {
            Some(width) if width == len => Ok(width),
            Some(width) => Err(record_error(
                self.feature,
                format!(
                    "decode_raw needs strings of one size, expected {width} bytes as in the \
                     first record of this batch, found {len}"
                ),
            )),
            None if !len.is_multiple_of(self.item_size) => Err(record_error(
                self.feature,
                format!(
                    "decode_raw needs a whole number of {}-byte items, found a string of {len} \
                     bytes",
                    self.item_size
                ),
            )),
            None => {
                *self.width = Some(len);
                let row_bytes = self.feature.values_per_record().saturating_mul(len);
                let capacity = self.block.reservation(row_bytes);
                if capacity > self.data.capacity() {
                    let mut data = self.pool.take(capacity);
                    data.set_len(self.data.len());
                    self.pool.give(std::mem::replace(self.data, data));
                }
                Ok(len)
            }
        }
    }
}

fn default_bytes(default: &DefaultValue) -> Vec<u8> {
    match default {
        DefaultValue::Int64(values) => values.iter().flat_map(|v| v.to_ne_bytes()).collect(),
        DefaultValue::Float32(values) => values.iter().flat_map(|v| v.to_ne_bytes()).collect(),
        DefaultValue::Bytes(_) => Vec::new(),
    }
}

fn check_count(feature: &FeatureSpec, found: usize) -> Result<(), RecordError> {
    let expected = feature.values_per_record();
    if found == expected {
        return Ok(());
    }
    Err(record_error(
        feature,
        format!(
            "expected {expected} {} values for shape {:?}, found {found}",
            feature.kind.tf_name(),
            feature.shape
        ),
    ))
}

fn missing(feature: &FeatureSpec) -> RecordError {
    record_error(
        feature,
        "is required but missing, and the spec gives no default_value".to_string(),
    )
}

fn wrong_kind(feature: &FeatureSpec, found: FeatureList<'_>) -> RecordError {
    let expected = match feature.kind {
        FeatureKind::Int64 => "an int64_list",
        FeatureKind::Float32 => "a float_list",
        FeatureKind::Bytes | FeatureKind::Raw { .. } => "a bytes_list",
    };
    record_error(
        feature,
        format!("expected {expected}, found {}", found.kind_name()),
    )
}

fn unparsable(feature: &FeatureSpec) -> RecordError {
    let list = match feature.kind {
        FeatureKind::Int64 => "int64_list",
        FeatureKind::Float32 => "float_list",
        FeatureKind::Bytes | FeatureKind::Raw { .. } => "bytes_list",
    };
    record_error(feature, format!("its {list} does not parse"))
}

fn record_error(feature: &FeatureSpec, problem: String) -> RecordError {
    RecordError(format!(
        "feature '{}' ({}) {problem}",
        feature.name,
        feature.kind.tf_name()
    ))
}
