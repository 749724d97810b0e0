//! RecordIO as dmlc/MXNet frame it: `u32 magic`, `u32 lrecord` (29-bit length, 3-bit cflag),
//! the payload, then zero padding to a 4-byte boundary, all little-endian.
//!
//! cflag 0 is a whole record; 1, 2 and 3 are the first, middle and last part of a record that
//! the writer split where the magic word occurred in its data.

use super::{corrupt, format_mixup_hint, Format, Multipart, Record};
use crate::error::Result;
use crate::source::Input;

/// The word that starts every RecordIO header, as a little-endian `u32`.
pub const RECORDIO_MAGIC: u32 = 0xced7_230a;
const HEADER_LEN: usize = 8;
const TFRECORD_HEADER_LEN: usize = 12;
const LENGTH_MASK: u32 = (1 << 29) - 1;

const WHOLE: u32 = 0;
const FIRST: u32 = 1;
const MIDDLE: u32 = 2;
const LAST: u32 = 3;

/// Reads RecordIO records from an [`Input`] it owns; multipart records come back joined.
pub struct RecordIoFramer {
    input: Input,
    multipart: Multipart,
    max_record_bytes: usize,
    /// Where the parts of a multipart record are joined.
    scratch: Vec<u8>,
}

/// One part as read: its cflag and payload (without padding).
struct Part {
    cflag: u32,
    length: usize,
    framed: usize,
}

impl RecordIoFramer {
    /// Reads `input` from where it stands. A record over `max_record_bytes` is an error, its
    /// parts joined with the magic word between them counted in either [`Multipart`] mode; each
    /// part's length is checked from its header, before its payload is read.
    pub fn new(mut input: Input, multipart: Multipart, max_record_bytes: usize) -> Self {
        // A part is never longer than its record; with its header and up to 3 bytes of padding.
        input.frame_as(
            Format::RecordIo,
            max_record_bytes.saturating_add(HEADER_LEN + 3),
        );
        RecordIoFramer {
            input,
            multipart,
            max_record_bytes,
            scratch: Vec::new(),
        }
    }

    /// The input, for its offset and label.
    pub fn input(&self) -> &Input {
        &self.input
    }

    /// As [`Framer::next_record`](super::Framer::next_record). A multipart record is borrowed
    /// from the framer's own buffer rather than the input's; errors name the offset of the
    /// record's first part.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        let offset = self.input.offset();
        let Some(part) = self.read_part(None)? else {
            return Ok(None);
        };
        match part.cflag {
            WHOLE => {
                let framed = self.input.take(part.framed);
                let data = &framed[HEADER_LEN..HEADER_LEN + part.length];
                Ok(Some(Record { offset, data }))
            }
            FIRST => {
                self.scratch.clear();
                self.append_part(&part);
                self.read_remaining_parts(offset)?;
                Ok(Some(Record {
                    offset,
                    data: &self.scratch,
                }))
            }
            cflag => Err(self.corrupt(
                offset,
                format!("a {} part without a first part", part_name(cflag)),
            )),
        }
    }

    /// Reads parts after the first until the last one, joining them in `scratch`.
    fn read_remaining_parts(&mut self, record_offset: u64) -> Result<()> {
        // The record's length as dmlc joins it, magic words between parts included, whatever
        // `scratch` holds: so that both modes stop at the same part (found by the fuzzer).
        let mut joined_length = self.scratch.len();
        loop {
            let offset = self.input.offset();
            let Some(part) = self.read_part(Some(record_offset))? else {
                return Err(self.corrupt(
                    record_offset,
                    "truncated multipart record: the stream ends before its last part".into(),
                ));
            };
            match part.cflag {
                MIDDLE | LAST => {
                    joined_length = joined_length.saturating_add(4 + part.length);
                    self.check_length(joined_length, record_offset)?;
                    if self.multipart == Multipart::Dmlc {
                        self.scratch
                            .extend_from_slice(&RECORDIO_MAGIC.to_le_bytes());
                    }
                    self.append_part(&part);
                    if part.cflag == LAST {
                        return Ok(());
                    }
                }
                cflag => {
                    return Err(self.corrupt(
                        record_offset,
                        format!(
                            "a {} part at byte offset {offset} inside a multipart record",
                            part_name(cflag)
                        ),
                    ))
                }
            }
        }
    }

    fn check_length(&self, length: usize, record_offset: u64) -> Result<()> {
        if length <= self.max_record_bytes {
            return Ok(());
        }
        let message = super::too_long("a record", self.max_record_bytes);
        Err(self.corrupt(record_offset, message))
    }

    fn append_part(&mut self, part: &Part) {
        let framed = self.input.take(part.framed);
        self.scratch
            .extend_from_slice(&framed[HEADER_LEN..HEADER_LEN + part.length]);
    }

    /// Reads and checks the next part's header and makes sure all of it (padding too) is in the
    /// window. `None` at a clean end of the stream. `record_start` is the offset of the
    /// multipart record this part belongs to, if any: errors point at the record's start.
    fn read_part(&mut self, record_start: Option<u64>) -> Result<Option<Part>> {
        let offset = self.input.offset();
        let fail = |this: &Self, message: String| match record_start {
            None => this.corrupt(offset, message),
            Some(start) => this.corrupt(
                start,
                format!("{message} in the part at byte offset {offset} of a multipart record"),
            ),
        };
        let available = self.input.fill(HEADER_LEN)?;
        if available == 0 {
            return Ok(None);
        }
        if available < HEADER_LEN {
            return Err(fail(
                self,
                format!("truncated header: {available} of {HEADER_LEN} bytes before the end"),
            ));
        }
        let header = &self.input.window()[..HEADER_LEN];
        let magic = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        if magic != RECORDIO_MAGIC {
            let hint = self.format_mixup_hint(offset)?;
            return Err(fail(
                self,
                format!("bad magic 0x{magic:08x}, expected 0x{RECORDIO_MAGIC:08x}{hint}"),
            ));
        }
        let lrecord = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let length = (lrecord & LENGTH_MASK) as usize;
        let cflag = lrecord >> 29;
        if cflag > LAST {
            return Err(fail(self, format!("invalid continuation flag {cflag}")));
        }
        // Before the part is read: the read buffer never has to grow past the cap.
        self.check_length(length, record_start.unwrap_or(offset))?;
        let framed = HEADER_LEN + length.next_multiple_of(4);
        let available = self.input.fill(framed)?;
        if available < framed {
            return Err(fail(
                self,
                format!(
                    "truncated record: {} of {length} payload bytes (plus {} padding) before the \
                     end",
                    (available - HEADER_LEN).min(length),
                    framed - HEADER_LEN - length,
                ),
            ));
        }
        Ok(Some(Part {
            cflag,
            length,
            framed,
        }))
    }

    /// At the stream's start only: a hint when the stream looks like TFRecord (see
    /// [`format_mixup_hint`]), which takes 12 bytes where a RecordIO header has 8.
    #[cold]
    fn format_mixup_hint(&mut self, offset: u64) -> Result<String> {
        if offset != 0 {
            return Ok(String::new());
        }
        self.input.fill(TFRECORD_HEADER_LEN)?;
        Ok(format_mixup_hint(self.input.window(), Format::RecordIo))
    }

    fn corrupt(&self, offset: u64, message: String) -> crate::Error {
        corrupt(&self.input, Format::RecordIo, offset, message)
    }
}

fn part_name(cflag: u32) -> &'static str {
    match cflag {
        WHOLE => "whole-record",
        FIRST => "first",
        MIDDLE => "middle",
        _ => "last",
    }
}
