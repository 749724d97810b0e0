//! TFRecord: `u64 length`, `u32 masked_crc32c(length)`, `data`, `u32 masked_crc32c(data)`, all
//! little-endian.

use super::{corrupt, format_mixup_hint, Format, Record};
use crate::error::Result;
use crate::source::Input;

const HEADER_LEN: usize = 12;
const FOOTER_LEN: usize = 4;

/// TFRecord's CRC mask, which keeps a CRC of data that itself holds CRCs from looking valid.
#[inline]
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Reads TFRecord records from an [`Input`] it owns, checking both CRCs of each.
pub struct TfRecordFramer {
    input: Input,
    max_skip: u64,
    max_record_bytes: usize,
    /// Bad data CRCs in a row; reset by a good record (the incumbent's rule).
    consecutive_skipped: u64,
    skipped: u64,
}

impl TfRecordFramer {
    /// Reads `input` from where it stands. Up to `max_corrupted_records_to_skip` records in a
    /// row whose data CRC is wrong are dropped, not errors; a wrong length CRC always is, since
    /// then where the next record starts is unknown. A length over `max_record_bytes` is an
    /// error before the data is read.
    pub fn new(
        mut input: Input,
        max_corrupted_records_to_skip: u64,
        max_record_bytes: usize,
    ) -> Self {
        input.frame_as(
            Format::TfRecord,
            max_record_bytes.saturating_add(HEADER_LEN + FOOTER_LEN),
        );
        TfRecordFramer {
            input,
            max_skip: max_corrupted_records_to_skip,
            max_record_bytes,
            consecutive_skipped: 0,
            skipped: 0,
        }
    }

    /// The input, for its offset and label.
    pub fn input(&self) -> &Input {
        &self.input
    }

    /// Records dropped for a bad data CRC so far: all of them, not only the current run.
    pub fn records_skipped(&self) -> u64 {
        self.skipped
    }

    /// As [`Framer::next_record`](super::Framer::next_record).
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        loop {
            let offset = self.input.offset();
            let available = self.input.fill(HEADER_LEN)?;
            if available == 0 {
                return Ok(None);
            }
            if available < HEADER_LEN {
                let hint = self.format_mixup_hint(offset);
                return Err(self.corrupt(
                    offset,
                    format!(
                        "truncated header: {available} of {HEADER_LEN} bytes before the end{hint}"
                    ),
                ));
            }
            let header = &self.input.window()[..HEADER_LEN];
            let length_bytes: [u8; 8] = header[..8].try_into().expect("8 bytes");
            let expected = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
            if masked_crc32c(&length_bytes) != expected {
                // A bad length CRC means the framing itself is lost: always fatal.
                let hint = self.format_mixup_hint(offset);
                return Err(self.corrupt(offset, format!("length CRC mismatch{hint}")));
            }
            let length = u64::from_le_bytes(length_bytes);
            let total = usize::try_from(length)
                .ok()
                .filter(|&len| len <= self.max_record_bytes)
                .map(|len| len + HEADER_LEN + FOOTER_LEN)
                .ok_or_else(|| {
                    let what = format!("record length {length}:");
                    self.corrupt(offset, super::too_long(&what, self.max_record_bytes))
                })?;
            let available = self.input.fill(total)?;
            if available < total {
                return Err(self.corrupt(
                    offset,
                    format!(
                        "truncated record: {} of {length} data bytes and {} of 4 CRC bytes \
                         before the end",
                        (available - HEADER_LEN).min(total - HEADER_LEN - FOOTER_LEN),
                        available.saturating_sub(total - FOOTER_LEN),
                    ),
                ));
            }
            let window = &self.input.window()[..total];
            let data = &window[HEADER_LEN..total - FOOTER_LEN];
            let expected = u32::from_le_bytes(window[total - FOOTER_LEN..].try_into().expect("4"));
            if masked_crc32c(data) == expected {
                self.consecutive_skipped = 0;
                let record = self.input.take(total);
                let data = &record[HEADER_LEN..total - FOOTER_LEN];
                return Ok(Some(Record { offset, data }));
            }
            if self.consecutive_skipped >= self.max_skip {
                return Err(self.corrupt(
                    offset,
                    if self.max_skip == 0 {
                        "data CRC mismatch".to_owned()
                    } else {
                        format!(
                            "data CRC mismatch after {} corrupt records in a row were skipped \
                             (max_corrupted_records_to_skip={})",
                            self.consecutive_skipped, self.max_skip
                        )
                    },
                ));
            }
            self.consecutive_skipped += 1;
            self.skipped += 1;
            self.input.take(total);
        }
    }

    /// At the stream's start only: a hint when the stream looks like RecordIO (see
    /// [`format_mixup_hint`]).
    #[cold]
    fn format_mixup_hint(&self, offset: u64) -> String {
        if offset != 0 {
            return String::new();
        }
        format_mixup_hint(self.input.window(), Format::TfRecord)
    }

    fn corrupt(&self, offset: u64, message: String) -> crate::Error {
        corrupt(&self.input, Format::TfRecord, offset, message)
    }
}
