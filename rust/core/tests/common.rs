//! Helpers shared by the integration tests: encoding records and framing streams in memory.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{self, Read};

use pipemode_core::framing::{Framer, FramingOptions};
use pipemode_core::source::Input;
use pipemode_core::{Error, Format, RecordWriter};

pub const FORMATS: [Format; 3] = [Format::RecordIo, Format::TfRecord, Format::TextLine];

pub fn encode(format: Format, records: &[Vec<u8>]) -> Vec<u8> {
    let mut writer = RecordWriter::new(Vec::new(), format, "memory".into());
    for record in records {
        writer.write_record(record).expect("writable record");
    }
    writer.into_inner().expect("flush to memory")
}

/// A reader that hands out the bytes in chunks of the given sizes (cycled), as a pipe might.
pub struct Chunked {
    data: Vec<u8>,
    at: usize,
    sizes: Vec<usize>,
    turn: usize,
}

impl Chunked {
    pub fn new(data: Vec<u8>, sizes: Vec<usize>) -> Self {
        assert!(sizes.iter().all(|&s| s > 0));
        Chunked {
            data,
            at: 0,
            sizes,
            turn: 0,
        }
    }
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.sizes[self.turn % self.sizes.len()];
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Every record until the end or the first error, with the error.
pub fn frame_all(
    input: Input,
    format: Format,
    options: FramingOptions,
) -> (Vec<Vec<u8>>, Option<Error>) {
    let mut framer = Framer::new(input, format, options).expect("valid options");
    let mut records = Vec::new();
    loop {
        match framer.next_record() {
            Ok(Some(record)) => records.push(record.data.to_vec()),
            Ok(None) => return (records, None),
            Err(error) => return (records, Some(error)),
        }
    }
}

pub fn frame_bytes(format: Format, data: &[u8]) -> (Vec<Vec<u8>>, Option<Error>) {
    frame_all(
        Input::from_bytes(data.to_vec(), "memory"),
        format,
        FramingOptions::default(),
    )
}

pub fn frame_chunked(
    format: Format,
    data: &[u8],
    sizes: Vec<usize>,
    buffer: usize,
) -> (Vec<Vec<u8>>, Option<Error>) {
    let reader = Box::new(Chunked::new(data.to_vec(), sizes));
    frame_all(
        Input::from_read(reader, "memory", buffer),
        format,
        FramingOptions::default(),
    )
}

/// TextLine splits as the facts say: on `\n` only, a final line without one is a record.
pub fn split_lines(data: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}
