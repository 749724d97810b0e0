//! The Example decoder on arbitrary records: every push must give a row or a `RecordError`,
//! never a panic or an over-read, and every block must hold exactly the rows pushed, each with
//! the spec's number of values. The spec has every kind of feature, with and without defaults.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pipemode_core::example::{
    Column, DefaultValue, DenseBlock, DenseBlockBuilder, ExampleSpec, FeatureKind, FeatureSpec,
};
use pipemode_core::BatchBuilder;

fn feature(
    name: &str,
    kind: FeatureKind,
    shape: &[usize],
    default: Option<DefaultValue>,
) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        kind,
        shape: shape.to_vec(),
        default,
    }
}

fn spec() -> Arc<ExampleSpec> {
    static SPEC: OnceLock<Arc<ExampleSpec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let features = vec![
            feature("a", FeatureKind::Int64, &[1], None),
            feature(
                "",
                FeatureKind::Float32,
                &[2],
                Some(DefaultValue::Float32(vec![0.5, 1.5])),
            ),
            feature(
                "s",
                FeatureKind::Bytes,
                &[],
                Some(DefaultValue::Bytes(vec![b"x".to_vec()])),
            ),
            feature("r", FeatureKind::Raw { item_size: 2 }, &[], None),
            feature(
                "q",
                FeatureKind::Raw { item_size: 8 },
                &[2],
                Some(DefaultValue::Bytes(vec![vec![0; 8]; 2])),
            ),
            feature(
                "i",
                FeatureKind::Int64,
                &[0],
                Some(DefaultValue::Int64(vec![])),
            ),
        ];
        Arc::new(ExampleSpec::new(features).expect("a valid spec"))
    })
    .clone()
}

/// Every numeric column holds the block's rows of its row shape; every string column
/// `rows * n` strings. Returns the block's rows.
fn check_block(block: &DenseBlock, spec: &ExampleSpec) -> usize {
    let rows = block.rows;
    for (column, feature) in block.columns.iter().zip(spec.features()) {
        match column {
            Column::Numeric { data, row_shape } => {
                let item = feature.kind.item_size().expect("a numeric column");
                let row_bytes = row_shape.iter().product::<usize>() * item;
                assert_eq!(data.len(), rows * row_bytes);
                assert_eq!(data.as_ptr() as usize % 64, 0);
            }
            Column::Bytes { data, ends } => {
                assert_eq!(ends.len(), rows * feature.values_per_record());
                assert!(ends.windows(2).all(|w| w[0] <= w[1]));
                assert_eq!(ends.last().copied().unwrap_or(0), data.len());
            }
        }
    }
    rows
}

// The first byte sets the batch and block sizes; the rest is records, each a length byte then
// its bytes. Blocks may end early where a decode_raw size changes between batches, but every
// record that decoded must come out, in a block that is full, early at a batch, or the last.
fuzz_target!(|data: &[u8]| {
    let Some((&sizes, mut rest)) = data.split_first() else {
        return;
    };
    let (batch, batches) = (usize::from(sizes % 4) + 1, usize::from(sizes >> 4 & 3) + 1);
    let spec = spec();
    let mut builder = DenseBlockBuilder::new(spec.clone(), batch * batches).with_batch_size(batch);
    let (mut decoded, mut delivered) = (0, 0);
    while let Some((&len, tail)) = rest.split_first() {
        let (record, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        if builder.push(record).is_ok() {
            decoded += 1;
        }
        if builder.is_full() {
            let rows = check_block(&builder.take(), &spec);
            assert!(rows == batch * batches || (rows > 0 && rows.is_multiple_of(batch)));
            delivered += rows;
        }
    }
    delivered += check_block(&builder.take(), &spec);
    assert_eq!(delivered, decoded);
});
