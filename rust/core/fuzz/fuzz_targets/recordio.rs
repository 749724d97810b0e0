//! RecordIO framing, both multipart modes, on arbitrary bytes. The two modes differ only in
//! what is put between the parts of a record, so they must find the same records at the same
//! offsets and fail the same way.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pipemode_core::framing::FramingOptions;
use pipemode_core::{Format, Multipart};

fn frame(case: &common::Case, multipart: Multipart) -> common::Framed {
    let options = FramingOptions {
        multipart,
        ..FramingOptions::default()
    };
    case.check(Format::RecordIo, options)
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = common::Case::new(data) else {
        return;
    };
    let dmlc = frame(&case, Multipart::Dmlc);
    let concat = frame(&case, Multipart::Concat);
    assert_eq!(dmlc.verdict, concat.verdict);
    assert_eq!(dmlc.records.len(), concat.records.len());
    for ((offset, joined), (concat_offset, concatenated)) in
        dmlc.records.iter().zip(&concat.records)
    {
        assert_eq!(offset, concat_offset);
        // dmlc puts a 4-byte magic word back between parts; concat puts nothing.
        assert!(joined.len() >= concatenated.len());
        assert!((joined.len() - concatenated.len()).is_multiple_of(4));
    }
});
