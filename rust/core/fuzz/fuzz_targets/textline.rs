//! TextLine framing on arbitrary bytes: it must agree with a plain split on `\n` (a final
//! `\n` ends the last line rather than starting an empty one), up to the first line longer
//! than the record cap, which must be the error.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pipemode_core::framing::FramingOptions;
use pipemode_core::Format;

/// Each line of `stream` with the offset where it starts.
fn lines(stream: &[u8]) -> Vec<(u64, Vec<u8>)> {
    if stream.is_empty() {
        return Vec::new();
    }
    let body = stream.strip_suffix(b"\n").unwrap_or(stream);
    let mut offset = 0;
    body.split(|&b| b == b'\n')
        .map(|line| {
            let start = offset;
            offset += line.len() as u64 + 1;
            (start, line.to_vec())
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = common::Case::new(data) else {
        return;
    };
    let framed = case.check(Format::TextLine, FramingOptions::default());
    let expected = lines(case.stream);
    let read = framed.records.len();
    assert_eq!(framed.records[..], expected[..read.min(expected.len())]);
    match framed.verdict {
        Ok(()) => assert_eq!(read, expected.len()),
        Err(_) => assert!(expected[read].1.len() > case.max_record_bytes),
    }
});
