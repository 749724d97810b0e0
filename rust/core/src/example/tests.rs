//! Unit and property tests of the Example decoder. The cases mirror what `tf.io.parse_example`
//! was observed to do (TF 2.21); tests/test_decode_tf.py checks the same against TF itself.

use std::sync::Arc;

use proptest::prelude::*;

use super::wire::encode::{put_delimited, put_varint};
use super::*;

fn spec(features: Vec<FeatureSpec>) -> Arc<ExampleSpec> {
    Arc::new(ExampleSpec::new(features).unwrap())
}

fn feature(name: &str, kind: FeatureKind, shape: &[usize]) -> FeatureSpec {
    FeatureSpec {
        name: name.into(),
        kind,
        shape: shape.to_vec(),
        default: None,
    }
}

fn with_default(mut f: FeatureSpec, default: DefaultValue) -> FeatureSpec {
    f.default = Some(default);
    f
}

fn decode(spec: &Arc<ExampleSpec>, records: &[Vec<u8>]) -> Result<DenseBlock, DecodeError> {
    decode_examples(
        spec.clone(),
        records.iter().map(Vec::as_slice),
        &BufferPool::new(4),
    )
}

fn error_of(spec: &Arc<ExampleSpec>, record: Vec<u8>) -> String {
    decode(spec, &[record]).unwrap_err().error.0
}

fn f32s(column: &Column) -> Vec<f32> {
    let Column::Numeric { data, .. } = column else {
        panic!("not numeric")
    };
    data.as_slice()
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

fn i64s(column: &Column) -> Vec<i64> {
    let Column::Numeric { data, .. } = column else {
        panic!("not numeric")
    };
    data.as_slice()
        .chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

fn strings(column: &Column) -> Vec<Vec<u8>> {
    let Column::Bytes { data, ends } = column else {
        panic!("not bytes")
    };
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let s = data[start..end].to_vec();
            start = end;
            s
        })
        .collect()
}

/// A raw `Features` body from hand-made map entries, for encodings `encode_example` never makes.
fn example_of(entries: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, feature) in entries {
        let mut entry = Vec::new();
        put_delimited(&mut entry, 1, name);
        put_delimited(&mut entry, 2, feature);
        put_delimited(&mut body, 1, &entry);
    }
    let mut out = Vec::new();
    put_delimited(&mut out, 1, &body);
    out
}

fn float_feature(values: &[f32]) -> Vec<u8> {
    let packed: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut list = Vec::new();
    put_delimited(&mut list, 1, &packed);
    let mut out = Vec::new();
    put_delimited(&mut out, 2, &list);
    out
}

#[test]
fn tutorial_record_decodes_data_and_label() {
    let data: Vec<u8> = (0..1024)
        .flat_map(|i| (i as f64 * 0.5).to_le_bytes())
        .collect();
    let record = encode_example(&[
        (b"data", Values::Bytes(&[&data])),
        (b"labels", Values::Int64(&[1])),
    ]);
    assert_eq!(record.len(), 8230, "the tutorial's Example size (facts §6)");
    let spec = spec(vec![
        feature("data", FeatureKind::Raw { item_size: 8 }, &[]),
        feature("labels", FeatureKind::Int64, &[]),
    ]);
    let block = decode(&spec, &[record.clone(), record]).unwrap();
    assert_eq!(block.rows, 2);
    let Column::Numeric {
        data: column,
        row_shape,
    } = &block.columns[0]
    else {
        panic!()
    };
    assert_eq!(row_shape, &[1024]);
    assert_eq!(column.as_ptr() as usize % ALIGN, 0);
    assert_eq!(&column.as_slice()[..8192], &data[..]);
    assert_eq!(&column.as_slice()[8192..], &data[..]);
    assert_eq!(i64s(&block.columns[1]), [1, 1]);
}

#[test]
fn last_occurrence_of_a_name_wins_and_empty_features_do_not_count() {
    let spec = spec(vec![feature("a", FeatureKind::Float32, &[2])]);
    let record = example_of(&[
        (b"a", float_feature(&[9.0])), // wrong count, but overridden
        (b"a", float_feature(&[1.0, 2.0])),
        (b"a", Vec::new()), // an empty Feature: absent, so the one before stays
    ]);
    let block = decode(&spec, &[record]).unwrap();
    assert_eq!(f32s(&block.columns[0]), [1.0, 2.0]);
}

#[test]
fn unpacked_lists_and_unknown_example_fields_decode() {
    let mut floats = Vec::new();
    for v in [1.5f32, -2.0] {
        floats.push(0x0d);
        floats.extend_from_slice(&v.to_le_bytes());
    }
    let mut float_list = Vec::new();
    put_delimited(&mut float_list, 2, &floats);
    let mut ints = Vec::new();
    for v in [-1i64, 300] {
        ints.push(0x08);
        put_varint(&mut ints, v as u64);
    }
    let mut int_list = Vec::new();
    put_delimited(&mut int_list, 3, &ints);
    let mut record = vec![0x10, 0x05]; // field 2, a varint: unknown, skipped
    record.extend(example_of(&[(b"f", float_list), (b"i", int_list)]));
    let spec = spec(vec![
        feature("f", FeatureKind::Float32, &[2]),
        feature("i", FeatureKind::Int64, &[2]),
    ]);
    let block = decode(&spec, &[record]).unwrap();
    assert_eq!(f32s(&block.columns[0]), [1.5, -2.0]);
    assert_eq!(i64s(&block.columns[1]), [-1, 300]);
}

#[test]
fn missing_features_take_their_default_or_fail() {
    let spec_with = spec(vec![
        with_default(
            feature("x", FeatureKind::Int64, &[2]),
            DefaultValue::Int64(vec![7, 8]),
        ),
        with_default(
            feature("s", FeatureKind::Bytes, &[]),
            DefaultValue::Bytes(vec![b"none".to_vec()]),
        ),
    ]);
    let block = decode(&spec_with, &[encode_example(&[])]).unwrap();
    assert_eq!(i64s(&block.columns[0]), [7, 8]);
    assert_eq!(strings(&block.columns[1]), [b"none".to_vec()]);

    let spec_without = spec(vec![feature("x", FeatureKind::Int64, &[0])]);
    let message = error_of(&spec_without, encode_example(&[]));
    assert_eq!(
        message,
        "feature 'x' (int64) is required but missing, and the spec gives no default_value"
    );
}

#[test]
fn a_present_list_is_checked_even_with_a_default() {
    let spec = spec(vec![with_default(
        feature("a", FeatureKind::Float32, &[3]),
        DefaultValue::Float32(vec![0.0; 3]),
    )]);
    let empty = encode_example(&[(b"a", Values::Float32(&[]))]);
    assert_eq!(
        error_of(&spec, empty),
        "feature 'a' (float) expected 3 float values for shape [3], found 0"
    );
    let ints = encode_example(&[(b"a", Values::Int64(&[]))]);
    assert_eq!(
        error_of(&spec, ints),
        "feature 'a' (float) expected a float_list, found an int64_list"
    );
}

#[test]
fn decode_raw_needs_equal_whole_item_strings() {
    let spec = spec(vec![feature("r", FeatureKind::Raw { item_size: 2 }, &[])]);
    let record = |bytes: &[u8]| encode_example(&[(b"r", Values::Bytes(&[bytes]))]);
    let block = decode(&spec, &[record(&[1, 0, 2, 0]), record(&[3, 0, 4, 0])]).unwrap();
    let Column::Numeric { data, row_shape } = &block.columns[0] else {
        panic!()
    };
    assert_eq!(row_shape, &[2]);
    assert_eq!(data.as_slice(), [1, 0, 2, 0, 3, 0, 4, 0]);

    let error = decode(&spec, &[record(&[1, 0]), record(&[1, 0, 2, 0])]).unwrap_err();
    assert_eq!(error.record, 1);
    assert!(
        error.error.0.contains("expected 2 bytes"),
        "{}",
        error.error
    );
    assert!(error_of(&spec, record(&[1, 2, 3])).contains("whole number of 2-byte items"));

    let empty = decode(&spec, &[]).unwrap();
    let Column::Numeric { row_shape, .. } = &empty.columns[0] else {
        panic!()
    };
    assert_eq!(
        row_shape,
        &[0],
        "TF: decode_raw of an empty batch is [0, 0]"
    );
}

#[test]
fn malformed_records_are_errors_not_rows() {
    let spec = spec(vec![with_default(
        feature("a", FeatureKind::Int64, &[]),
        DefaultValue::Int64(vec![0]),
    )]);
    assert!(error_of(&spec, vec![0x01, 0x02]).starts_with("not a valid tf.train.Example"));
    assert!(error_of(&spec, vec![0x0a, 0x05, 0x0a]).starts_with("not a valid tf.train.Example"));
    // An empty record is an Example with no features.
    assert_eq!(i64s(&decode(&spec, &[Vec::new()]).unwrap().columns[0]), [0]);
    // A Feature whose first byte is no list kind.
    let odd = example_of(&[(b"a", vec![0x08, 0x01])]);
    assert!(error_of(&spec, odd).contains("no known value list (first byte 0x08)"));
}

#[test]
fn an_unknown_kind_fails_the_record_whichever_occurrence_wins() {
    // TF reads the kind of every occurrence of a wanted feature ("Unsupported datatype"), though
    // only the last non-empty one gives the values.
    let spec = spec(vec![feature("a", FeatureKind::Int64, &[])]);
    let int64 = |v: u8| vec![0x1a, 0x03, 0x0a, 0x01, v];
    let unknown = vec![0x22, 0x00]; // field 4: no list kind TF knows
    let first = example_of(&[(b"a", unknown.clone()), (b"a", int64(5))]);
    assert!(error_of(&spec, first).contains("no known value list (first byte 0x22)"));
    let between = example_of(&[(b"a", int64(4)), (b"a", unknown.clone()), (b"a", int64(5))]);
    assert!(error_of(&spec, between).contains("no known value list"));
    // Features the spec does not name are not read at all.
    let unrelated = example_of(&[(b"b", unknown), (b"a", int64(5))]);
    assert_eq!(i64s(&decode(&spec, &[unrelated]).unwrap().columns[0]), [5]);
}

#[test]
fn features_tagged_by_a_longer_varint_are_an_unknown_field_as_in_tf() {
    // TF compares the tag of `Example.features` and of each map entry with the byte 0x0a; the
    // same tag as the two-byte varint `8a 00` is another field to it.
    let spec = spec(vec![with_default(
        feature("a", FeatureKind::Int64, &[]),
        DefaultValue::Int64(vec![-7]),
    )]);
    let canonical = encode_example(&[(b"a", Values::Int64(&[5]))]);
    assert_eq!(canonical[0], 0x0a);
    let mut long_features_tag = vec![0x8a, 0x00];
    long_features_tag.extend_from_slice(&canonical[1..]);
    let block = decode(&spec, &[long_features_tag]).unwrap();
    assert_eq!(
        i64s(&block.columns[0]),
        [-7],
        "skipped: the feature is missing"
    );

    let entries = &canonical[2..]; // one map entry: 0x0a, its length, its fields
    assert_eq!(entries[0], 0x0a);
    let mut body = vec![0x8a, 0x00];
    body.extend_from_slice(&entries[1..]);
    let mut long_entry_tag = Vec::new();
    put_delimited(&mut long_entry_tag, 1, &body);
    assert!(error_of(&spec, long_entry_tag).contains("unexpected field in Features"));

    // Within a map entry TF reads tags as varints, so there `8a 00` is the key.
    let mut entry = vec![0x8a, 0x00, 0x01, b'a'];
    put_delimited(&mut entry, 2, &[0x1a, 0x03, 0x0a, 0x01, 0x05]);
    let mut features = Vec::new();
    put_delimited(&mut features, 1, &entry);
    let mut long_key_tag = Vec::new();
    put_delimited(&mut long_key_tag, 1, &features);
    assert_eq!(
        i64s(&decode(&spec, &[long_key_tag]).unwrap().columns[0]),
        [5]
    );
}

#[test]
fn a_huge_shape_is_a_count_error_not_an_allocation() {
    // 2^40 values per record: a row would be 8 TiB (int64) or 4 TiB (float32).
    let huge = 1usize << 40;
    let spec = spec(vec![
        feature("a", FeatureKind::Float32, &[huge]),
        feature("b", FeatureKind::Int64, &[huge]),
    ]);
    let floats = example_of(&[(b"a", float_feature(&[1.0]))]);
    assert!(error_of(&spec, floats).contains(&format!("expected {huge} float values")));
    let strings = example_of(&[(b"a", vec![0x0a, 0x03, 0x0a, 0x01, b'x'])]);
    assert!(error_of(&spec, strings).contains("float"));
}

#[test]
#[should_panic(expected = "write past the end of a column")]
fn an_overflowing_column_slice_is_refused() {
    let mut buf = AlignedBuf::with_capacity(64);
    buf.set_len(16);
    buf.slice_mut(8, usize::MAX - 7);
}

#[test]
fn a_failed_record_leaves_the_builder_as_it_was() {
    let spec = spec(vec![
        feature("s", FeatureKind::Bytes, &[]),
        feature("r", FeatureKind::Raw { item_size: 4 }, &[]),
        feature("i", FeatureKind::Int64, &[]),
    ]);
    let good = encode_example(&[
        (b"s", Values::Bytes(&[b"ok"])),
        (b"r", Values::Bytes(&[&[1, 0, 0, 0]])),
        (b"i", Values::Int64(&[5])),
    ]);
    let bad = encode_example(&[
        (b"s", Values::Bytes(&[b"bad"])),
        (b"r", Values::Bytes(&[&[2, 0, 0, 0]])),
    ]);
    let mut builder = DenseBlockBuilder::new(spec, 4);
    assert!(builder.push(&bad).is_err());
    builder.push(&good).unwrap();
    assert!(builder.push(&bad).is_err());
    builder.push(&good).unwrap();
    let block = builder.take();
    assert_eq!(block.rows, 2);
    assert_eq!(strings(&block.columns[0]), [b"ok".to_vec(), b"ok".to_vec()]);
    let Column::Numeric { data, .. } = &block.columns[1] else {
        panic!()
    };
    assert_eq!(data.as_slice(), [1, 0, 0, 0, 1, 0, 0, 0]);
    assert_eq!(i64s(&block.columns[2]), [5, 5]);
}

#[test]
fn a_raw_size_may_change_where_a_batch_starts_but_not_within_one() {
    let spec = spec(vec![feature("r", FeatureKind::Raw { item_size: 1 }, &[])]);
    let record = |width: usize| encode_example(&[(b"r", Values::Bytes(&[&vec![7; width]]))]);
    let mut builder = DenseBlockBuilder::new(spec, 6).with_batch_size(2);
    let mut blocks = Vec::new();
    for width in [4, 4, 8, 8, 8, 8] {
        builder.push(&record(width)).unwrap();
        if builder.is_full() {
            blocks.push(builder.take());
        }
    }
    blocks.push(builder.take());
    let shapes: Vec<(usize, Vec<usize>)> = blocks
        .iter()
        .map(|block| match &block.columns[0] {
            Column::Numeric { row_shape, .. } => (block.rows, row_shape.clone()),
            Column::Bytes { .. } => panic!("raw columns are numeric"),
        })
        .collect();
    assert_eq!(shapes, [(2, vec![4]), (4, vec![8])]);

    // Within a batch the sizes must agree, as in one decode_raw call.
    assert!(builder.push(&record(4)).is_ok());
    let error = builder.push(&record(8)).unwrap_err();
    assert!(error.0.contains("expected 4 bytes"), "{error}");
    assert_eq!(builder.take().rows, 1);
}

#[test]
fn a_block_ends_after_the_batch_that_brings_it_to_its_byte_cap() {
    // Rows of 8 + 100 bytes, batches of 3 rows: a 500-byte cap is reached within the second
    // batch, so blocks hold two batches (648 bytes), not the 12 rows they have room for.
    let spec = spec(vec![
        feature("i", FeatureKind::Int64, &[]),
        feature("r", FeatureKind::Raw { item_size: 1 }, &[]),
    ]);
    let record = encode_example(&[
        (b"i", Values::Int64(&[1])),
        (b"r", Values::Bytes(&[&[7; 100]])),
    ]);
    let mut builder = DenseBlockBuilder::new(spec, 12)
        .with_batch_size(3)
        .with_max_block_bytes(500);
    let mut rows = Vec::new();
    for _ in 0..14 {
        builder.push(&record).unwrap();
        if builder.is_full() {
            rows.push(builder.take().rows);
        }
    }
    rows.push(builder.take().rows);
    assert_eq!(rows, [6, 6, 2]);
}

#[test]
fn blocks_fill_to_their_size_and_start_afresh() {
    let spec = spec(vec![feature("i", FeatureKind::Int64, &[])]);
    let mut builder = DenseBlockBuilder::new(spec, 2);
    for i in 0..3 {
        builder
            .push(&encode_example(&[(b"i", Values::Int64(&[i]))]))
            .unwrap();
        assert_eq!(builder.is_full(), i == 1);
        if builder.is_full() {
            assert_eq!(i64s(&builder.take().columns[0]), [0, 1]);
        }
    }
    assert_eq!(i64s(&builder.take().columns[0]), [2]);
}

#[test]
fn column_buffers_given_back_are_reused_and_the_pool_stays_bounded() {
    let spec = spec(vec![feature("i", FeatureKind::Int64, &[16])]);
    let pool = BufferPool::new(1);
    let mut builder = DenseBlockBuilder::with_pool(spec, 8, pool.clone());
    let record = encode_example(&[(b"i", Values::Int64(&[3; 16]))]);
    builder.push(&record).unwrap();
    let Column::Numeric { data, .. } = builder.take().columns.remove(0) else {
        panic!()
    };
    let address = data.as_ptr();
    pool.give(data);
    pool.give(AlignedBuf::with_capacity(4096)); // beyond the limit: dropped
    builder.take(); // the block after next takes the buffer given back
    builder.push(&record).unwrap();
    let block = builder.take();
    let Column::Numeric { data, .. } = &block.columns[0] else {
        panic!()
    };
    assert_eq!(data.as_ptr(), address);
    assert_eq!(i64s(&block.columns[0]), [3; 16]);
}

#[test]
fn specs_are_checked_up_front() {
    let twice = ExampleSpec::new(vec![
        feature("a", FeatureKind::Int64, &[]),
        feature("a", FeatureKind::Float32, &[]),
    ]);
    assert!(twice.unwrap_err().to_string().contains("listed twice"));
    let short = ExampleSpec::new(vec![with_default(
        feature("a", FeatureKind::Int64, &[3]),
        DefaultValue::Int64(vec![1]),
    )]);
    assert!(short
        .unwrap_err()
        .to_string()
        .contains("default_value of 1 values"));
    let odd = ExampleSpec::new(vec![feature("a", FeatureKind::Raw { item_size: 3 }, &[])]);
    assert!(odd.is_err());
    let huge = ExampleSpec::new(vec![feature("a", FeatureKind::Int64, &[1 << 40, 1 << 30])]);
    assert!(huge.unwrap_err().to_string().contains("too large"));
    // A huge block of a large shape reserves a bounded amount up front (no abort).
    let large = spec(vec![feature("a", FeatureKind::Int64, &[1 << 20])]);
    let mut builder = DenseBlockBuilder::new(large, 1 << 20);
    assert!(builder.push(&encode_example(&[])).is_err());
    assert_eq!(builder.take().rows, 0);
}

/// One feature's spec and the values each record holds for it.
#[derive(Debug, Clone)]
enum Generated {
    Int64(Vec<Vec<i64>>),
    Float32(Vec<Vec<f32>>),
    Bytes(Vec<Vec<Vec<u8>>>),
    Raw(Vec<Vec<Vec<u8>>>),
}

fn generated_feature(rows: usize) -> impl Strategy<Value = (Vec<usize>, Generated)> {
    let shape = prop::collection::vec(0usize..3, 0..3);
    shape.prop_flat_map(move |shape| {
        let n: usize = shape.iter().product();
        let values = prop_oneof![
            prop::collection::vec(prop::collection::vec(any::<i64>(), n), rows)
                .prop_map(Generated::Int64),
            prop::collection::vec(prop::collection::vec(any::<f32>(), n), rows)
                .prop_map(Generated::Float32),
            prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), n),
                rows
            )
            .prop_map(Generated::Bytes),
            (0usize..4).prop_flat_map(move |width| {
                prop::collection::vec(
                    prop::collection::vec(prop::collection::vec(any::<u8>(), width * 4), n),
                    rows,
                )
                .prop_map(Generated::Raw)
            }),
        ];
        (Just(shape), values)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encoded_examples_decode_to_their_values(
        features in (1usize..5).prop_flat_map(|rows| {
            prop::collection::vec(generated_feature(rows), 1..4).prop_map(move |f| (rows, f))
        })
    ) {
        let (rows, features) = features;
        let names: Vec<String> = (0..features.len()).map(|i| format!("feature_{i}")).collect();
        let spec = spec(features.iter().zip(&names).map(|((shape, values), name)| {
            let kind = match values {
                Generated::Int64(_) => FeatureKind::Int64,
                Generated::Float32(_) => FeatureKind::Float32,
                Generated::Bytes(_) => FeatureKind::Bytes,
                Generated::Raw(_) => FeatureKind::Raw { item_size: 4 },
            };
            feature(name, kind, shape)
        }).collect());
        let records: Vec<Vec<u8>> = (0..rows).map(|row| {
            let byte_refs: Vec<Vec<&[u8]>> = features.iter().map(|(_, values)| match values {
                Generated::Bytes(v) | Generated::Raw(v) => v[row].iter().map(Vec::as_slice).collect(),
                _ => Vec::new(),
            }).collect();
            let entries: Vec<(&[u8], Values<'_>)> = features.iter().zip(&names).zip(&byte_refs)
                .map(|(((_, values), name), refs)| {
                    let values = match values {
                        Generated::Int64(v) => Values::Int64(&v[row]),
                        Generated::Float32(v) => Values::Float32(&v[row]),
                        Generated::Bytes(_) | Generated::Raw(_) => Values::Bytes(refs),
                    };
                    (name.as_bytes(), values)
                }).collect();
            encode_example(&entries)
        }).collect();

        let block = decode(&spec, &records).unwrap();
        prop_assert_eq!(block.rows, rows);
        for ((_, values), column) in features.iter().zip(&block.columns) {
            match values {
                Generated::Int64(v) => prop_assert_eq!(i64s(column), v.concat()),
                Generated::Float32(v) => {
                    let bits = |x: Vec<f32>| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    prop_assert_eq!(bits(f32s(column)), bits(v.concat()));
                }
                Generated::Bytes(v) => prop_assert_eq!(strings(column), v.concat()),
                Generated::Raw(v) => {
                    let Column::Numeric { data, .. } = column else { panic!() };
                    prop_assert_eq!(data.as_slice().to_vec(), v.concat().concat());
                    prop_assert_eq!(data.as_ptr() as usize % ALIGN, 0);
                }
            }
        }
    }

    #[test]
    fn raw_sizes_work_per_batch_as_in_tf(
        widths in prop::collection::vec(prop::sample::select(vec![0usize, 2, 4]), 1..24),
        batch in 1usize..4,
        batches in 1usize..4,
    ) {
        // The model: TF decodes batch after batch; each batch needs one string size.
        let first_bad = widths.chunks(batch).position(|c| c.iter().any(|&w| w != c[0]));
        let spec = spec(vec![feature("r", FeatureKind::Raw { item_size: 2 }, &[])]);
        let mut builder = DenseBlockBuilder::new(spec, batch * batches).with_batch_size(batch);
        let mut decoded = Vec::new();
        let mut failed_at = None;
        for (i, &width) in widths.iter().enumerate() {
            let value: Vec<u8> = (0..width).map(|b| (i * 8 + b) as u8).collect();
            if builder.push(&encode_example(&[(b"r", Values::Bytes(&[&value]))])).is_err() {
                failed_at = Some(i);
                break;
            }
            if builder.is_full() {
                decoded.push(builder.take());
            }
        }
        decoded.push(builder.take());
        prop_assert_eq!(failed_at.map(|i| i / batch), first_bad);
        let mut row = 0;
        for block in &decoded {
            let Column::Numeric { data, row_shape } = &block.columns[0] else { panic!() };
            let width = row_shape[0] * 2;
            for r in 0..block.rows {
                prop_assert_eq!(width, widths[row]);
                let expected: Vec<u8> = (0..width).map(|b| (row * 8 + b) as u8).collect();
                prop_assert_eq!(&data.as_slice()[r * width..(r + 1) * width], &expected[..]);
                row += 1;
            }
        }
        prop_assert_eq!(row, failed_at.unwrap_or(widths.len()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(records in prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..64), 1..8,
    )) {
        let spec = spec(vec![
            feature("a", FeatureKind::Int64, &[1]),
            with_default(feature("", FeatureKind::Float32, &[]), DefaultValue::Float32(vec![0.5])),
            with_default(feature("s", FeatureKind::Bytes, &[]), DefaultValue::Bytes(vec![vec![]])),
            feature("r", FeatureKind::Raw { item_size: 2 }, &[]),
        ]);
        let mut builder = DenseBlockBuilder::new(spec, 4);
        for record in &records {
            let _ = builder.push(record);
            if builder.is_full() {
                builder.take();
            }
        }
        builder.take();
    }

    #[test]
    fn mutated_examples_never_panic(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let data = [7u8; 16];
        let mut record = encode_example(&[
            (b"r", Values::Bytes(&[&data])),
            (b"i", Values::Int64(&[1, -1])),
            (b"f", Values::Float32(&[0.25])),
        ]);
        for (at, byte) in flips {
            let i = at.index(record.len());
            record[i] = byte;
        }
        let spec = spec(vec![
            feature("r", FeatureKind::Raw { item_size: 8 }, &[]),
            feature("i", FeatureKind::Int64, &[2]),
            feature("f", FeatureKind::Float32, &[1]),
        ]);
        let _ = decode(&spec, &[record]);
    }
}
