//! Splitting a byte stream into records: RecordIO, TFRecord and TextLine.
//!
//! A framer reads from an [`Input`] and hands out each complete record as a slice borrowed from
//! the read buffer with the byte offset where its framing starts. Nothing is
//! copied here except multipart RecordIO, whose parts are joined in a scratch buffer. A record
//! is handed out only once all of it, framing included, has been read and checked.

mod recordio;
mod textline;
mod tfrecord;

use std::str::FromStr;

pub use recordio::{RecordIoFramer, RECORDIO_MAGIC};
pub use textline::TextLineFramer;
pub use tfrecord::{masked_crc32c, TfRecordFramer};

use crate::error::{Error, Result};
use crate::source::Input;

/// One complete record, borrowed until the next call to the framer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Stream offset of the record's first framing byte.
    pub offset: u64,
    /// The payload alone, without its framing (and, for TextLine, without its `\n`).
    pub data: &'a [u8],
}

/// The record framings of SageMaker Pipe Mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// dmlc/MXNet RecordIO: magic word, length and continuation flag, payload padded to 4 bytes.
    RecordIo,
    /// TensorFlow's TFRecord: length and data, each guarded by a masked CRC32C.
    TfRecord,
    /// Lines ending at `\n`.
    TextLine,
}

impl Format {
    /// The name [`Format::from_str`] accepts, as error messages show it.
    pub fn name(self) -> &'static str {
        match self {
            Format::RecordIo => "RecordIO",
            Format::TfRecord => "TFRecord",
            Format::TextLine => "TextLine",
        }
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Accepts the names the incumbent accepted, exactly.
    fn from_str(name: &str) -> Result<Format> {
        match name {
            "RecordIO" => Ok(Format::RecordIo),
            "TFRecord" => Ok(Format::TfRecord),
            "TextLine" => Ok(Format::TextLine),
            _ => Err(Error::Config(format!(
                "Invalid record format: {name:?} (expected \"RecordIO\", \"TFRecord\" or \"TextLine\")"
            ))),
        }
    }
}

/// How the parts of a multipart RecordIO record are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Multipart {
    /// As dmlc/MXNet read them: the magic word the writer split on is put back between parts,
    /// so the record reads back exactly as it was written.
    #[default]
    Dmlc,
    /// The parts back to back, as sagemaker-tensorflow-extensions joined them.
    Concat,
}

impl FromStr for Multipart {
    type Err = Error;

    fn from_str(name: &str) -> Result<Multipart> {
        match name {
            "dmlc" => Ok(Multipart::Dmlc),
            "concat" => Ok(Multipart::Concat),
            _ => Err(Error::Config(format!(
                "Invalid multipart mode: {name:?} (expected \"dmlc\" or \"concat\")"
            ))),
        }
    }
}

/// The longest record read by default: 2 GiB, the most a protobuf (a tf.train.Example) can
/// hold. A record must be whole in memory before it is handed out, so without a cap a TextLine
/// stream without newlines, endless multipart parts or a TFRecord length field would decide
/// how much memory the reader takes.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 2 << 30;

/// What a framer needs to know beyond the bytes.
#[derive(Debug, Clone, Copy)]
pub struct FramingOptions {
    /// RecordIO only: how the parts of a multipart record are joined.
    pub multipart: Multipart,
    /// TFRecord only: how many consecutive records with a bad data CRC may be skipped.
    pub max_corrupted_records_to_skip: u64,
    /// A longer record is an error naming its offset (see [`DEFAULT_MAX_RECORD_BYTES`]).
    pub max_record_bytes: usize,
}

impl Default for FramingOptions {
    fn default() -> Self {
        FramingOptions {
            multipart: Multipart::default(),
            max_corrupted_records_to_skip: 0,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// Rejects options that do not apply to `format`, before anything is opened.
pub fn check_options(format: Format, options: &FramingOptions) -> Result<()> {
    if options.max_corrupted_records_to_skip > 0 && format != Format::TfRecord {
        return Err(Error::Config(format!(
            "max_corrupted_records_to_skip applies only to TFRecord, not to {}",
            format.name()
        )));
    }
    Ok(())
}

/// A framer of any [`Format`], chosen at run time.
pub enum Framer {
    /// Reads [`Format::RecordIo`].
    RecordIo(RecordIoFramer),
    /// Reads [`Format::TfRecord`].
    TfRecord(TfRecordFramer),
    /// Reads [`Format::TextLine`].
    TextLine(TextLineFramer),
}

impl Framer {
    /// Takes ownership of `input` and reads it as `format`. Errs, before reading anything, on
    /// options that do not apply to `format` (see [`check_options`]).
    pub fn new(input: Input, format: Format, options: FramingOptions) -> Result<Framer> {
        check_options(format, &options)?;
        Ok(match format {
            Format::RecordIo => Framer::RecordIo(RecordIoFramer::new(
                input,
                options.multipart,
                options.max_record_bytes,
            )),
            Format::TfRecord => Framer::TfRecord(TfRecordFramer::new(
                input,
                options.max_corrupted_records_to_skip,
                options.max_record_bytes,
            )),
            Format::TextLine => {
                Framer::TextLine(TextLineFramer::new(input, options.max_record_bytes))
            }
        })
    }

    /// The next complete record, `None` at a clean end of the stream, or the reason the stream
    /// cannot be framed. After an error the framer must not be asked again.
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        match self {
            Framer::RecordIo(f) => f.next_record(),
            Framer::TfRecord(f) => f.next_record(),
            Framer::TextLine(f) => f.next_record(),
        }
    }

    /// Bytes of the stream consumed so far.
    pub fn position(&self) -> u64 {
        self.input().offset()
    }

    /// Records dropped under `max_corrupted_records_to_skip`.
    pub fn records_skipped(&self) -> u64 {
        match self {
            Framer::TfRecord(f) => f.records_skipped(),
            _ => 0,
        }
    }

    fn input(&self) -> &Input {
        match self {
            Framer::RecordIo(f) => f.input(),
            Framer::TfRecord(f) => f.input(),
            Framer::TextLine(f) => f.input(),
        }
    }
}

/// The message for a record over the cap: "{what} longer than the N-byte limit on a record".
fn too_long(what: &str, max_record_bytes: usize) -> String {
    format!("{what} longer than the {max_record_bytes}-byte limit on a record")
}

/// The framing the first bytes of a stream are valid in, if either: RecordIO's magic word, or a
/// TFRecord header whose masked length CRC is right. Either matches random bytes once in 2^32.
fn framing_of_start(start: &[u8]) -> Option<Format> {
    if start.get(..4) == Some(&RECORDIO_MAGIC.to_le_bytes()[..]) {
        return Some(Format::RecordIo);
    }
    let (length, crc) = (start.get(..8)?, start.get(8..12)?);
    let crc = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
    (masked_crc32c(length) == crc).then_some(Format::TfRecord)
}

/// Added to the error about a stream's first record when its first bytes frame in another
/// framing than `read_as`: then the likely cause is the `record_format` passed, not the data.
fn format_mixup_hint(start: &[u8], read_as: Format) -> String {
    match framing_of_start(start) {
        Some(other) if other != read_as => format!(
            "; this looks like {0} data: pass record_format=\"{0}\"",
            other.name()
        ),
        _ => String::new(),
    }
}

/// A framing error at `offset` of the stream `input` reads.
fn corrupt(input: &Input, format: Format, offset: u64, message: String) -> Error {
    Error::Corrupt {
        path: input.label().to_owned(),
        format: format.name(),
        offset,
        message,
    }
}
