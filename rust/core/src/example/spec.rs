//! What to decode: the `tf.io.FixedLenFeature` subset of `tf.io.parse_example`'s feature dict,
//! plus `tf.io.decode_raw` of a string feature.

use crate::error::{Error, Result};

/// The values one feature holds, and the column they become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// An `int64_list`, decoded to `int64`.
    Int64,
    /// A `float_list`, decoded to `float32`.
    Float32,
    /// A `bytes_list`, kept as byte strings.
    Bytes,
    /// A `bytes_list` whose strings are little-endian arrays of `item_size`-byte items
    /// (`tf.io.decode_raw`), decoded to a numeric column one dimension deeper.
    /// A string feature read by `tf.io.decode_raw` into items of `item_size` bytes.
    Raw {
        /// Bytes per item: 1, 2, 4 or 8.
        item_size: usize,
    },
}

impl FeatureKind {
    /// Bytes per value in the column: none for byte strings, which are not numeric.
    pub fn item_size(self) -> Option<usize> {
        match self {
            FeatureKind::Int64 => Some(8),
            FeatureKind::Float32 => Some(4),
            FeatureKind::Raw { item_size } => Some(item_size),
            FeatureKind::Bytes => None,
        }
    }

    /// TF's name for the feature's dtype, as its error messages use it.
    pub fn tf_name(self) -> &'static str {
        match self {
            FeatureKind::Int64 => "int64",
            FeatureKind::Float32 => "float",
            FeatureKind::Bytes | FeatureKind::Raw { .. } => "string",
        }
    }
}

/// A feature's `default_value`, flattened (TF reshapes it to the feature's shape).
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// An int64 feature's default.
    Int64(Vec<i64>),
    /// A float32 feature's default.
    Float32(Vec<f32>),
    /// A string (or `decode_raw`) feature's default.
    Bytes(Vec<Vec<u8>>),
}

impl DefaultValue {
    fn len(&self) -> usize {
        match self {
            DefaultValue::Int64(v) => v.len(),
            DefaultValue::Float32(v) => v.len(),
            DefaultValue::Bytes(v) => v.len(),
        }
    }

    fn fits(&self, kind: FeatureKind) -> bool {
        matches!(
            (self, kind),
            (DefaultValue::Int64(_), FeatureKind::Int64)
                | (DefaultValue::Float32(_), FeatureKind::Float32)
                | (
                    DefaultValue::Bytes(_),
                    FeatureKind::Bytes | FeatureKind::Raw { .. }
                )
        )
    }
}

/// One `FixedLenFeature`: every record holds exactly `shape.iter().product()` values.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    /// The feature's name in the Example.
    pub name: String,
    /// Its kind of values.
    pub kind: FeatureKind,
    /// The shape of one record's values (`[]` for one value).
    pub shape: Vec<usize>,
    /// Used when a record lacks the feature; without one, such a record is an error.
    pub default: Option<DefaultValue>,
}

impl FeatureSpec {
    /// Values per record.
    pub fn values_per_record(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The features to decode, checked once so the decoder need not check per record.
#[derive(Debug, Clone, PartialEq)]
pub struct ExampleSpec {
    features: Vec<FeatureSpec>,
}

impl ExampleSpec {
    /// The spec of `features`, checked: distinct names, defaults that fill their shapes.
    pub fn new(features: Vec<FeatureSpec>) -> Result<Self> {
        for (i, feature) in features.iter().enumerate() {
            if features[..i].iter().any(|f| f.name == feature.name) {
                return Err(config(feature, "is listed twice"));
            }
            let values = feature
                .shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d));
            if values.and_then(|n| n.checked_mul(8)).is_none() {
                return Err(config(
                    feature,
                    &format!("has a shape {:?} too large to hold", feature.shape),
                ));
            }
            if let FeatureKind::Raw { item_size } = feature.kind {
                if !matches!(item_size, 1 | 2 | 4 | 8) {
                    return Err(config(
                        feature,
                        &format!("decode_raw item size {item_size} is not 1, 2, 4 or 8"),
                    ));
                }
            }
            if let Some(default) = &feature.default {
                if !default.fits(feature.kind) {
                    return Err(config(feature, "has a default_value of another type"));
                }
                if default.len() != feature.values_per_record() {
                    return Err(config(
                        feature,
                        &format!(
                            "has a default_value of {} values, but its shape {:?} holds {}",
                            default.len(),
                            feature.shape,
                            feature.values_per_record()
                        ),
                    ));
                }
            }
        }
        Ok(Self { features })
    }

    /// The features, in the order given.
    pub fn features(&self) -> &[FeatureSpec] {
        &self.features
    }

    /// The index of the feature called `name`. A linear scan: specs hold a handful of features,
    /// and comparing lengths first rejects almost every wrong name without reading it.
    #[inline]
    pub fn position(&self, name: &[u8]) -> Option<usize> {
        self.features
            .iter()
            .position(|f| f.name.len() == name.len() && f.name.as_bytes() == name)
    }
}

fn config(feature: &FeatureSpec, problem: &str) -> Error {
    Error::Config(format!("feature '{}' {problem}", feature.name))
}
