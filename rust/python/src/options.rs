//! The reader options RecordReader and ExampleReader share, checked once for both.

use std::time::Duration;

use pipemode_core::framing::FramingOptions;
use pipemode_core::source::SourceOptions;
use pipemode_core::{Error, ReaderOptions};

/// The shared keyword arguments of the native readers, as Python passes them.
pub struct ReaderArgs<'a> {
    pub record_format: &'a str,
    pub max_corrupted_records_to_skip: i64,
    pub multipart: &'a str,
    pub open_timeout: Option<f64>,
    pub name: Option<String>,
    pub buffer_size: i64,
    pub prefetch: i64,
}

impl ReaderArgs<'_> {
    /// The core reader options, or a clear error naming the argument at fault.
    pub fn parse(self) -> Result<ReaderOptions, Error> {
        let max_skip = u64::try_from(self.max_corrupted_records_to_skip).map_err(|_| {
            Error::Config(format!(
                "max_corrupted_records_to_skip must be >= 0, not {}",
                self.max_corrupted_records_to_skip
            ))
        })?;
        Ok(ReaderOptions {
            format: self.record_format.parse()?,
            framing: FramingOptions {
                multipart: self.multipart.parse()?,
                max_corrupted_records_to_skip: max_skip,
                ..FramingOptions::default()
            },
            source: SourceOptions {
                open_timeout: parse_timeout(self.open_timeout)?,
                buffer_size: positive("buffer_size", self.buffer_size)?,
            },
            prefetch: positive("prefetch", self.prefetch)?,
            name: self.name,
        })
    }
}

/// Seconds from Python (`None` = forever) as a timeout, rejecting what is not a duration.
pub fn parse_timeout(seconds: Option<f64>) -> Result<Option<Duration>, Error> {
    seconds
        .map(|s| {
            parse_seconds("open_timeout", s).map_err(|_| {
                Error::Config(format!(
                    "open_timeout must be a number of seconds >= 0 or None, not {s}"
                ))
            })
        })
        .transpose()
}

/// Seconds from Python as a duration, or a clear error naming the argument.
pub fn parse_seconds(name: &str, seconds: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        Error::Config(format!(
            "{name} must be a number of seconds >= 0, not {seconds}"
        ))
    })
}

/// `value` as a count of at least 1, or a clear error naming the argument.
pub fn positive(name: &str, value: i64) -> Result<usize, Error> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v >= 1)
        .ok_or_else(|| Error::Config(format!("{name} must be >= 1, not {value}")))
}
