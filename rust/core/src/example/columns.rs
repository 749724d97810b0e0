//! The columns of a block being decoded: one `ColumnBuilder` per feature, writing each
//! record's values straight from the wire into its column, and the [`Column`]s they finish as.

use super::aligned::{AlignedBuf, BufferPool};
use super::spec::{DefaultValue, FeatureKind, FeatureSpec};
use super::wire::{self, BadList, FeatureList};
use crate::error::RecordError;

/// The most a column reserves before data arrives. A block's size comes from the spec, not the
/// data, but a huge shape must not reserve terabytes up front: beyond this, columns grow as
/// values actually arrive.
const MAX_RESERVATION: usize = 256 << 20;

/// How large a block may grow, which sizes its columns before data arrives.
#[derive(Debug, Clone, Copy)]
pub(super) struct BlockSize {
    /// Rows the block may hold.
    pub rows: usize,
    /// Rows per batch: a block ends early only after a whole number of batches.
    pub batch_rows: usize,
    /// A block ends after the batch that brings its columns to this many bytes.
    pub max_bytes: usize,
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

/// One decoded column of a block.
#[derive(Debug)]
pub enum Column {
    /// Native-endian numbers, row after row; `row_shape` is the shape of one row's values
    /// (the feature's shape, plus the item count for `decode_raw`).
    Numeric {
        /// The values, [`crate::example::ALIGN`]-byte aligned.
        data: AlignedBuf,
        /// The shape of one row's values.
        row_shape: Vec<usize>,
    },
    /// Byte strings, row-major: string `i` is `data[ends[i - 1]..ends[i]]` (from 0 for `i = 0`).
    Bytes {
        /// The strings, back to back.
        data: Vec<u8>,
        /// Where each string ends in `data`.
        ends: Vec<usize>,
    },
}

/// A column being filled, with what it needs to fill a row fast.
pub(super) enum ColumnBuilder {
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
    pub(super) fn new(feature: &FeatureSpec, block: BlockSize, pool: &BufferPool) -> Self {
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

    pub(super) fn nbytes(&self) -> usize {
        match self {
            ColumnBuilder::Numeric { data, .. } | ColumnBuilder::Raw { data, .. } => data.len(),
            ColumnBuilder::Bytes { data, ends, .. } => {
                data.len() + ends.len() * std::mem::size_of::<usize>()
            }
        }
    }

    /// Drops whatever a failed record wrote past the first `rows` rows.
    pub(super) fn truncate(&mut self, rows: usize, feature: &FeatureSpec) {
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

    pub(super) fn write_row(
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

    pub(super) fn finish(self, feature: &FeatureSpec) -> Column {
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
