//! Properties of a batch cut into chunks: the chunks and their offset matrix give back exactly
//! the batch's records, in order, and each chunk stays within its byte budget.

use pipemode_core::{BatchBuilder, Chunks, RecordBatch, RecordBatchBuilder};
use proptest::prelude::*;

fn batch_of(records: &[Vec<u8>]) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new(records.len());
    for record in records {
        builder.push(record).expect("a raw batch takes any record");
    }
    builder.take()
}

/// The records a reader of the chunk matrices sees, row by row, the rest's last.
fn records_from_chunks(batch: &RecordBatch, max_chunk_bytes: usize) -> Vec<Vec<u8>> {
    let chunks = batch.chunks(max_chunk_bytes);
    let mut records = records_of(chunks);
    if let Some(rest) = chunks.rest() {
        assert!(rest.rest().is_none() && rest.len() == 1);
        records.extend(records_of(rest));
    }
    records
}

fn records_of(chunks: Chunks<'_>) -> Vec<Vec<u8>> {
    let width = chunks.records_per_chunk() + 1;
    let matrix = chunks.relative_offsets();
    assert_eq!(matrix.len(), chunks.len() * width);
    chunks
        .payloads()
        .zip(matrix.chunks(width))
        .flat_map(|(payload, row)| {
            row.windows(2)
                .map(|w| payload[w[0] as usize..w[1] as usize].to_vec())
                .collect::<Vec<_>>()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn chunks_give_back_the_records(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..60),
        max_chunk_bytes in 0usize..2000,
    ) {
        let batch = batch_of(&records);
        prop_assert_eq!(records_from_chunks(&batch, max_chunk_bytes), records);
    }

    #[test]
    fn chunks_stay_within_budget_unless_one_record_is_larger(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..60),
        max_chunk_bytes in 0usize..2000,
    ) {
        let batch = batch_of(&records);
        let chunks = batch.chunks(max_chunk_bytes);
        let largest = records.iter().map(Vec::len).max().unwrap_or(0);
        for payload in chunks.payloads().chain(chunks.rest().iter().flat_map(|rest| rest.payloads())) {
            prop_assert!(payload.len() <= max_chunk_bytes.max(largest));
        }
        let rest = chunks.rest().map_or(0, |rest| rest.records_per_chunk());
        prop_assert!(rest < chunks.records_per_chunk());
        prop_assert_eq!(chunks.len() * chunks.records_per_chunk() + rest, records.len());
    }
}

#[test]
fn empty_records_fit_in_one_chunk() {
    let batch = batch_of(&[vec![], vec![], vec![]]);
    let chunks = batch.chunks(64 << 10);
    assert_eq!((chunks.len(), chunks.records_per_chunk()), (1, 3));
    assert_eq!(chunks.relative_offsets(), vec![0, 0, 0, 0]);
}

#[test]
fn eight_kilobyte_records_go_four_to_a_64_kib_chunk_in_a_batch_of_1024() {
    // Seven fit in 64 KiB; four is the most that fit and divide 1024.
    let batch = batch_of(&vec![vec![7u8; 8230]; 1024]);
    let chunks = batch.chunks(64 << 10);
    assert_eq!((chunks.len(), chunks.records_per_chunk()), (256, 4));
    assert_eq!(
        &chunks.relative_offsets()[..5],
        &[0, 8230, 16460, 24690, 32920]
    );
    assert!(chunks.payloads().all(|payload| payload.len() == 4 * 8230));
}

#[test]
fn a_count_that_divides_the_batch_is_preferred_down_to_half_the_runs_size() {
    // 255 records of 8230 B: seven fit in 64 KiB, five divide 255.
    let batch = batch_of(&vec![vec![1u8; 8230]; 255]);
    let chunks = batch.chunks(64 << 10);
    assert_eq!((chunks.len(), chunks.records_per_chunk()), (51, 5));
    assert!(chunks.rest().is_none());
}

#[test]
fn otherwise_the_records_left_over_form_one_shorter_run() {
    // 253 = 11 * 23: no count from four to seven divides it, so runs of seven and one of one.
    let batch = batch_of(&vec![vec![1u8; 8230]; 253]);
    let chunks = batch.chunks(64 << 10);
    assert_eq!((chunks.len(), chunks.records_per_chunk()), (36, 7));
    let rest = chunks.rest().expect("one record left");
    assert_eq!((rest.len(), rest.records_per_chunk()), (1, 1));
    assert_eq!(rest.relative_offsets(), vec![0, 8230]);
}
