//! TFRecord framing on arbitrary bytes, with and without skipping bad data CRCs.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pipemode_core::framing::FramingOptions;
use pipemode_core::{Format, Multipart};

fuzz_target!(|data: &[u8]| {
    for max_corrupted_records_to_skip in [0, 3] {
        let options = FramingOptions {
            multipart: Multipart::Dmlc,
            max_corrupted_records_to_skip,
            ..FramingOptions::default()
        };
        common::check(data, Format::TfRecord, options);
    }
});
