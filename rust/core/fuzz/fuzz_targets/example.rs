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

/// Every numeric column holds `rows` rows of its row shape; every string column `rows * n`.
fn check_block(block: &DenseBlock, rows: usize, spec: &ExampleSpec) {
    assert_eq!(block.rows, rows);
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
}

// The first byte sets the block size; the rest is records, each a length byte then its bytes.
fuzz_target!(|data: &[u8]| {
    let Some((&block_rows, mut rest)) = data.split_first() else {
        return;
    };
    let spec = spec();
    let mut builder = DenseBlockBuilder::new(spec.clone(), usize::from(block_rows % 8) + 1);
    let mut rows = 0;
    while let Some((&len, tail)) = rest.split_first() {
        let (record, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        if builder.push(record).is_ok() {
            rows += 1;
        }
        if builder.is_full() {
            check_block(&builder.take(), rows, &spec);
            rows = 0;
        }
    }
    check_block(&builder.take(), rows, &spec);
});
