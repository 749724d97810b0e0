//! TextLine framing on arbitrary bytes: it must agree with a plain split on `\n`.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pipemode_core::framing::FramingOptions;
use pipemode_core::Format;

fuzz_target!(|data: &[u8]| {
    common::check(data, Format::TextLine, FramingOptions::default());
});
