//! Shared by the framing targets: frame the input whole (as from a mapped file) and through
//! reads of fuzzer-chosen sizes into a tiny buffer (as from a pipe), and require the same
//! records at the same offsets and the same error, word for word, both ways. Panics, hangs,
//! over-reads (ASan) and unbounded allocations (libFuzzer's -malloc_limit_mb and
//! -rss_limit_mb) are what the fuzzer looks for.

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

/// What a framer made of a stream: each record with its offset, then a clean end (`Ok`) or
/// the error's message.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed {
    pub records: Vec<(u64, Vec<u8>)>,
    pub verdict: Result<(), String>,
}

fn frame(input: Input, format: Format, options: FramingOptions) -> Framed {
    let mut framer = Framer::new(input, format, options).expect("valid options");
    let mut records = Vec::new();
    loop {
        match framer.next_record() {
            Ok(Some(record)) => records.push((record.offset, record.data.to_vec())),
            Ok(None) => {
                return Framed {
                    records,
                    verdict: Ok(()),
                }
            }
            Err(error) => {
                return Framed {
                    records,
                    verdict: Err(error.to_string()),
                }
            }
        }
    }
}

/// One fuzz input taken apart: the first byte picks the buffer size, the second the record
/// cap, the next four the read sizes; the rest is the stream.
pub struct Case<'a> {
    pub stream: &'a [u8],
    pub max_record_bytes: usize,
    buffer: usize,
    read_sizes: &'a [u8],
}

/// Bytes of choices before the stream.
pub const HEAD: usize = 6;

impl<'a> Case<'a> {
    pub fn new(data: &'a [u8]) -> Option<Self> {
        if data.len() < HEAD {
            return None;
        }
        let (head, stream) = data.split_at(HEAD);
        // 0 keeps the default 2 GiB cap; anything else is a cap of that many bytes, so the
        // cap's checks (multipart sums, TFRecord lengths, long lines) are reached too.
        let max_record_bytes = match head[1] {
            0 => FramingOptions::default().max_record_bytes,
            cap => usize::from(cap),
        };
        Some(Case {
            stream,
            max_record_bytes,
            buffer: usize::from(head[0] % 64) + 1,
            read_sizes: &head[2..],
        })
    }

    /// Frames the stream whole and chunked, requires both to agree and returns the outcome.
    pub fn check(&self, format: Format, options: FramingOptions) -> Framed {
        let options = FramingOptions {
            max_record_bytes: self.max_record_bytes,
            ..options
        };
        let whole = frame(
            Input::from_bytes(self.stream.to_vec(), "fuzz"),
            format,
            options,
        );
        let reader = Chunked {
            data: self.stream.to_vec(),
            at: 0,
            sizes: self.read_sizes.to_vec(),
            turn: 0,
        };
        let input = Input::from_read(Box::new(reader), "fuzz", self.buffer);
        let chunked = frame(input, format, options);
        assert_eq!(whole, chunked);
        whole
    }
}
