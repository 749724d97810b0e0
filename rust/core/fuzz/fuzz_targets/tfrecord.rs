//! TFRecord framing on arbitrary bytes, with and without skipping bad data CRCs. Skipping
//! only goes on where not skipping stops, so what is read without it is a prefix of what is
//! read with it, and all of it when the stream reads cleanly without.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pipemode_core::framing::FramingOptions;
use pipemode_core::Format;

fn frame(case: &common::Case, max_corrupted_records_to_skip: u64) -> common::Framed {
    let options = FramingOptions {
        max_corrupted_records_to_skip,
        ..FramingOptions::default()
    };
    case.check(Format::TfRecord, options)
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = common::Case::new(data) else {
        return;
    };
    let strict = frame(&case, 0);
    let skipping = frame(&case, 3);
    assert!(skipping.records.starts_with(&strict.records));
    if strict.verdict.is_ok() {
        assert_eq!(strict, skipping);
    }
});
