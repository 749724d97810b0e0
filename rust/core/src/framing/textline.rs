//! TextLine: records end at `\n` (which is dropped); `\r` is kept as data; a final line
//! without `\n` is a record; a trailing `\n` adds none. Any byte sequence frames, as long as no
//! line is longer than the record cap.

use super::{Format, Record};
use crate::error::Result;
use crate::source::Input;

/// Reads TextLine records from an [`Input`] it owns.
pub struct TextLineFramer {
    input: Input,
    max_record_bytes: usize,
    /// Bytes of the window already searched for `\n`, so a long line is scanned once.
    scanned: usize,
}

impl TextLineFramer {
    /// Reads `input` from where it stands; a line over `max_record_bytes` (without its `\n`) is
    /// an error at the line's start.
    pub fn new(mut input: Input, max_record_bytes: usize) -> Self {
        // A line over the cap is found once the cap plus one byte without `\n` is in the window.
        input.frame_as(Format::TextLine, max_record_bytes.saturating_add(1));
        TextLineFramer {
            input,
            max_record_bytes,
            scanned: 0,
        }
    }

    /// The input, for its offset and label.
    pub fn input(&self) -> &Input {
        &self.input
    }

    /// As [`Framer::next_record`](super::Framer::next_record); the only framing error is a
    /// line over the cap.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        let offset = self.input.offset();
        loop {
            let window = self.input.window();
            let newline = memchr::memchr(b'\n', &window[self.scanned..]);
            let length = newline.map_or(window.len(), |at| self.scanned + at);
            if length > self.max_record_bytes {
                let message = super::too_long("a line", self.max_record_bytes);
                return Err(super::corrupt(
                    &self.input,
                    Format::TextLine,
                    offset,
                    message,
                ));
            }
            if newline.is_some() {
                self.scanned = 0;
                let line = self.input.take(length + 1);
                return Ok(Some(Record {
                    offset,
                    data: &line[..length],
                }));
            }
            self.scanned = length;
            if self.input.at_eof() {
                if self.scanned == 0 {
                    return Ok(None);
                }
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
