//! Writing records in the three framings, byte for byte as the reference writers do:
//! `tf.io.TFRecordWriter` for TFRecord and dmlc's `RecordIOWriter` for RecordIO.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::framing::{masked_crc32c, Format, RECORDIO_MAGIC};

/// RecordIO keeps a record's length in 29 bits.
pub const RECORDIO_MAX_RECORD: usize = (1 << 29) - 1;

const WRITE_BUFFER_SIZE: usize = 1 << 20;

/// Writes records in one framing to a file or FIFO (or any `Write`).
pub struct RecordWriter<W: Write = BufWriter<File>> {
    out: W,
    format: Format,
    label: String,
}

impl RecordWriter {
    /// Creates (or truncates) the file at `path`; a FIFO is opened for writing, which waits
    /// for its reader.
    pub fn create(path: &Path, format: Format) -> Result<Self> {
        let label = path.display().to_string();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|source| Error::Io {
                path: label.clone(),
                offset: None,
                source,
            })?;
        Ok(RecordWriter::new(
            BufWriter::with_capacity(WRITE_BUFFER_SIZE, file),
            format,
            label,
        ))
    }
}

impl<W: Write> RecordWriter<W> {
    /// Writes into `out`; `label` names it in errors.
    pub fn new(out: W, format: Format, label: String) -> Self {
        RecordWriter { out, format, label }
    }

    /// Writes one record with its framing.
    pub fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let written = match self.format {
            Format::TfRecord => write_tfrecord(&mut self.out, data),
            Format::RecordIo => {
                if data.len() > RECORDIO_MAX_RECORD {
                    return Err(Error::Config(format!(
                        "{}: a RecordIO record holds at most {RECORDIO_MAX_RECORD} bytes, not {}",
                        self.label,
                        data.len()
                    )));
                }
                write_recordio(&mut self.out, data)
            }
            Format::TextLine => {
                if let Some(at) = memchr::memchr(b'\n', data) {
                    return Err(Error::Config(format!(
                        "{}: a TextLine record cannot hold a newline (found one at byte {at})",
                        self.label
                    )));
                }
                self.out
                    .write_all(data)
                    .and_then(|()| self.out.write_all(b"\n"))
            }
        };
        written.map_err(|source| self.io_error(source))
    }

    /// Writes out what is buffered.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| self.io_error(source))
    }

    /// Flushes and hands back the underlying writer.
    pub fn into_inner(mut self) -> Result<W> {
        self.flush()?;
        Ok(self.out)
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            path: self.label.clone(),
            offset: None,
            source,
        }
    }
}

fn write_tfrecord(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let length = (data.len() as u64).to_le_bytes();
    out.write_all(&length)?;
    out.write_all(&masked_crc32c(&length).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// As dmlc's `RecordIOWriter::WriteRecord`: where the magic word occurs at a 4-byte aligned
/// position of the data, the record is split there and the magic word dropped, so a reader
/// that lost its place can resynchronise on magic words; the reader puts it back.
fn write_recordio(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let magic = RECORDIO_MAGIC.to_le_bytes();
    let mut part_start = 0;
    for aligned in (0..data.len() / 4 * 4).step_by(4) {
        if data[aligned..aligned + 4] == magic {
            let cflag = if part_start == 0 { 1 } else { 2 };
            write_recordio_part(out, cflag, &data[part_start..aligned])?;
            part_start = aligned + 4;
        }
    }
    let cflag = if part_start == 0 { 0 } else { 3 };
    write_recordio_part(out, cflag, &data[part_start..])
}

fn write_recordio_part(out: &mut impl Write, cflag: u32, part: &[u8]) -> io::Result<()> {
    let lrecord = (cflag << 29) | part.len() as u32;
    out.write_all(&RECORDIO_MAGIC.to_le_bytes())?;
    out.write_all(&lrecord.to_le_bytes())?;
    out.write_all(part)?;
    let padding = part.len().next_multiple_of(4) - part.len();
    out.write_all(&[0u8; 3][..padding])
}
