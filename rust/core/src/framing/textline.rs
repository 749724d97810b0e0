//! TextLine: records end at `\n` (which is dropped); `\r` is kept as data; a final line
//! without `\n` is a record; a trailing `\n` adds none. Any byte sequence is valid.

use super::Record;
use crate::error::Result;
use crate::source::Input;

pub struct TextLineFramer {
    input: Input,
    /// Bytes of the window already searched for `\n`, so a long line is scanned once.
    scanned: usize,
}

impl TextLineFramer {
    pub fn new(input: Input) -> Self {
        TextLineFramer { input, scanned: 0 }
    }

    pub fn input(&self) -> &Input {
        &self.input
    }

    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        let offset = self.input.offset();
        loop {
            let window = self.input.window();
            if let Some(at) = memchr::memchr(b'\n', &window[self.scanned..]) {
                let length = self.scanned + at;
                self.scanned = 0;
                let line = self.input.take(length + 1);
                return Ok(Some(Record {
                    offset,
                    data: &line[..length],
                }));
            }
            self.scanned = window.len();
            if self.input.at_eof() {
                if self.scanned == 0 {
                    return Ok(None);
                }
                let length = self.scanned;
                self.scanned = 0;
                return Ok(Some(Record {
                    offset,
                    data: self.input.take(length),
                }));
            }
            self.input.fill(self.scanned + 1)?;
        }
    }
}
