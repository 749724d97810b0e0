//! Properties of a raw batch: whatever the records, the batch gives them back exactly, in
//! order, through `iter`, `get` and the payload buffer with its offsets.

use pipemode_core::{BatchBuilder, RecordBatch, RecordBatchBuilder};
use proptest::prelude::*;

fn batch_of(records: &[Vec<u8>]) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new(records.len());
    for record in records {
        builder.push(record).expect("a raw batch takes any record");
    }
    builder.take()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_batch_gives_back_its_records(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..60),
    ) {
        let batch = batch_of(&records);
        prop_assert_eq!(batch.len(), records.len());
        prop_assert_eq!(batch.iter().map(<[u8]>::to_vec).collect::<Vec<_>>(), records.clone());
        for (index, record) in records.iter().enumerate() {
            prop_assert_eq!(batch.get(index), Some(record.as_slice()));
        }
        prop_assert_eq!(batch.get(records.len()), None);
    }

    #[test]
    fn the_offsets_bound_each_record_in_the_payload_buffer(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..60),
    ) {
        let batch = batch_of(&records);
        let offsets = batch.offsets();
        prop_assert_eq!(offsets.len(), records.len() + 1);
        prop_assert_eq!(offsets[0], 0);
        prop_assert_eq!(offsets[records.len()] as usize, batch.data().len());
        for (bounds, record) in offsets.windows(2).zip(&records) {
            prop_assert_eq!(&batch.data()[bounds[0] as usize..bounds[1] as usize], record.as_slice());
        }
    }
}
