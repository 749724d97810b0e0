//! RecordIO framing, both multipart modes, on arbitrary bytes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pipemode_core::framing::FramingOptions;
use pipemode_core::{Format, Multipart};

fuzz_target!(|data: &[u8]| {
    for multipart in [Multipart::Dmlc, Multipart::Concat] {
        let options = FramingOptions {
            multipart,
            max_corrupted_records_to_skip: 0,
            ..FramingOptions::default()
        };
        common::check(data, Format::RecordIo, options);
    }
});
