//! Shared by the framing targets: frame the input whole (as from a mapped file) and through
//! reads of fuzzer-chosen sizes into a tiny buffer (as from a pipe), and require the same
//! records and the same verdict both ways. Panics, hangs, over-reads (ASan) and unbounded
//! allocations (libFuzzer's -rss_limit_mb) are what the fuzzer looks for.

use std::io::{self, Read};

use pipemode_core::framing::{Framer, FramingOptions};
use pipemode_core::source::Input;
use pipemode_core::Format;

/// Hands out `data` in reads of the sizes in `sizes`, cycled.
struct Chunked {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<u8>,
    turn: usize,
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = usize::from(self.sizes[self.turn % self.sizes.len()]).max(1);
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn frame(input: Input, format: Format, options: FramingOptions) -> (Vec<Vec<u8>>, bool) {
    let mut framer = Framer::new(input, format, options).expect("valid options");
    let mut records = Vec::new();
    loop {
        match framer.next_record() {
            Ok(Some(record)) => records.push(record.data.to_vec()),
            Ok(None) => return (records, true),
            Err(_) => return (records, false),
        }
    }
}

/// The first byte picks the buffer size, the next four the read sizes; the rest is the stream.
pub fn check(data: &[u8], format: Format, options: FramingOptions) {
    if data.len() < 5 {
        return;
    }
    let (head, stream) = data.split_at(5);
    let whole = frame(Input::from_bytes(stream.to_vec(), "fuzz"), format, options);
    let reader = Chunked {
        data: stream.to_vec(),
        at: 0,
        sizes: head[1..].to_vec(),
        turn: 0,
    };
    let buffer = usize::from(head[0] % 64) + 1;
    let chunked = frame(Input::from_read(Box::new(reader), "fuzz", buffer), format, options);
    assert_eq!(whole, chunked);
}
