//! TFRecord framing on arbitrary bytes, with and without skipping bad data CRCs. Skipping
//! only goes on where not skipping stops, so what is read without it is a prefix of what is
//! read with it, and all of it when the stream reads cleanly without.
//!
//! Each input is framed as it is and again with its CRCs made valid (see `make_crcs_valid`):
//! a fuzzer seldom guesses a CRC-32C, and one ten-minute run that never did stayed in front
//! of the first length CRC, never reaching the data, the skipping or the record cap.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pipemode_core::framing::{masked_crc32c, FramingOptions};
use pipemode_core::Format;

const HEADER_LEN: usize = 12;
const FOOTER_LEN: usize = 4;

fn frame(case: &common::Case, max_corrupted_records_to_skip: u64) -> common::Framed {
    let options = FramingOptions {
        max_corrupted_records_to_skip,
        ..FramingOptions::default()
    };
    case.check(Format::TfRecord, options)
}

fn check(case: &common::Case) {
    let strict = frame(case, 0);
    let skipping = frame(case, 3);
    assert!(skipping.records.starts_with(&strict.records));
    if strict.verdict.is_ok() {
        assert_eq!(strict, skipping);
    }
}

/// Makes the length CRC of every record the length fields describe valid, and the data CRC
/// too unless the first byte stored there is odd, which leaves the fuzzer one bit per record
/// to choose a bad data CRC with.
fn make_crcs_valid(out: &mut [u8]) {
    let mut at = 0;
    while at + HEADER_LEN <= out.len() {
        let crc = masked_crc32c(&out[at..at + 8]);
        out[at + 8..at + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        let length = u64::from_le_bytes(out[at..at + 8].try_into().expect("8 bytes"));
        let data = at + HEADER_LEN;
        let Some(end) = usize::try_from(length)
            .ok()
            .and_then(|length| data.checked_add(length))
            .filter(|&end| end <= out.len().saturating_sub(FOOTER_LEN))
        else {
            break;
        };
        if out[end].is_multiple_of(2) {
            let crc = masked_crc32c(&out[data..end]);
            out[end..end + FOOTER_LEN].copy_from_slice(&crc.to_le_bytes());
        }
        at = end + FOOTER_LEN;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = common::Case::new(data) else {
        return;
    };
    check(&case);
    let mut fixed = data.to_vec();
    make_crcs_valid(&mut fixed[common::HEAD..]);
    check(&common::Case::new(&fixed).expect("as long as data"));
});
