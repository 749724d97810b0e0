//! The reader thread: opens the source on first demand, frames records, pushes them into a
//! [`BatchBuilder`] and sends full batches through a bounded queue. The queue's depth bounds
//! memory whatever the stream's size, and the consumer (Python) never waits while holding
//! anything but the receiving end.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvError, RecvTimeoutError, SendTimeoutError, Sender};

use crate::batch::BatchBuilder;
use crate::error::{Error, Result};
use crate::framing::{self, Format, Framer, FramingOptions};
use crate::source::{self, SourceOptions, SourceStats, CANCEL_CHECK_INTERVAL};

/// What a [`PrefetchReader`] reads and how.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// The stream's record format.
    pub format: Format,
    /// How records are framed: multipart joining, skipping, the record size cap.
    pub framing: FramingOptions,
    /// How the source is opened and read.
    pub source: SourceOptions,
    /// Batches the thread may have ready before it waits for the consumer (at least 1).
    pub prefetch: usize,
    /// Put in front of the path in every error, e.g. `channel 'train'`.
    pub name: Option<String>,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            format: Format::RecordIo,
            framing: FramingOptions::default(),
            source: SourceOptions::default(),
            prefetch: 4,
            name: None,
        }
    }
}

/// Counters the reader thread keeps up to date while it runs.
#[derive(Debug, Default)]
pub struct ReaderStats {
    records: AtomicU64,
    bytes: AtomicU64,
    records_skipped: AtomicU64,
    source: Arc<SourceStats>,
    consumer_wait_nanos: AtomicU64,
}

/// A copy of [`ReaderStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReaderCounters {
    /// Records handed to the batch builder.
    pub records: u64,
    /// Stream bytes framed (framing included).
    pub bytes: u64,
    /// Corrupt records skipped under `max_corrupted_records_to_skip`.
    pub records_skipped: u64,
    /// Time the thread waited for the path, the FIFO's writer, or data from it.
    pub source_wait: Duration,
    /// Time the thread waited because the queue was full: the consumer was the bottleneck.
    pub consumer_wait: Duration,
}

impl ReaderStats {
    /// The counters now.
    pub fn snapshot(&self) -> ReaderCounters {
        ReaderCounters {
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            records_skipped: self.records_skipped.load(Ordering::Relaxed),
            source_wait: Duration::from_nanos(self.source.wait_nanos.load(Ordering::Relaxed)),
            consumer_wait: Duration::from_nanos(self.consumer_wait_nanos.load(Ordering::Relaxed)),
        }
    }

    fn publish(&self, framer: &Framer, records: u64) {
        self.records.store(records, Ordering::Relaxed);
        self.bytes.store(framer.position(), Ordering::Relaxed);
        self.records_skipped
            .store(framer.records_skipped(), Ordering::Relaxed);
    }
}

/// Stops a [`PrefetchReader`]'s thread from any thread, e.g. while another thread is blocked in
/// [`PrefetchReader::next_batch`], which then returns `Ok(None)`.
#[derive(Debug, Clone)]
pub struct Canceller(Arc<AtomicBool>);

impl Canceller {
    /// Stops the reader's thread and makes its pending `next_batch` return `Ok(None)`.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Reads one stream on its own thread into batches of `B`.
///
/// ```
/// use pipemode_core::{Format, PrefetchReader, ReaderOptions, RecordBatchBuilder, RecordWriter};
///
/// let path = std::env::temp_dir().join(format!("pipemode-doctest-{}", std::process::id()));
/// let mut writer = RecordWriter::create(&path, Format::TfRecord)?;
/// for record in [&b"a"[..], b"bc", b"def"] {
///     writer.write_record(record)?;
/// }
/// writer.flush()?;
///
/// let options = ReaderOptions { format: Format::TfRecord, ..ReaderOptions::default() };
/// let mut reader = PrefetchReader::new(&path, options, RecordBatchBuilder::new(2))?;
/// let mut records = Vec::new();
/// while let Some(batch) = reader.next_batch()? {
///     records.extend(batch.iter().map(<[u8]>::to_vec));
/// }
/// assert_eq!(records, [b"a".to_vec(), b"bc".to_vec(), b"def".to_vec()]);
/// std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PrefetchReader<B: BatchBuilder> {
    state: State<B>,
    cancel: Arc<AtomicBool>,
    stats: Arc<ReaderStats>,
}

enum State<B: BatchBuilder> {
    /// Nothing opened yet: a reader over a FIFO claims nothing until it is read.
    Idle {
        path: PathBuf,
        options: ReaderOptions,
        builder: B,
    },
    Running {
        batches: Receiver<Result<B::Batch>>,
        /// What [`PrefetchReader::wait_ready`] received ahead of `next_batch`.
        ready: Option<Result<B::Batch>>,
        thread: JoinHandle<()>,
        /// How errors name the stream, for a panic of the thread too.
        label: String,
    },
    Finished,
}

impl<B: BatchBuilder> PrefetchReader<B> {
    /// Checks the options; opens nothing until the first [`PrefetchReader::next_batch`].
    pub fn new(path: impl Into<PathBuf>, options: ReaderOptions, builder: B) -> Result<Self> {
        framing::check_options(options.format, &options.framing)?;
        Ok(PrefetchReader {
            state: State::Idle {
                path: path.into(),
                options,
                builder,
            },
            cancel: Arc::default(),
            stats: Arc::default(),
        })
    }

    /// The next batch, `Ok(None)` at the end of the stream and ever after, or the error that
    /// ended the stream (returned once; every record before it has been returned in batches).
    pub fn next_batch(&mut self) -> Result<Option<B::Batch>> {
        if matches!(self.state, State::Idle { .. }) {
            self.start()?;
        }
        let State::Running { batches, ready, .. } = &mut self.state else {
            return Ok(None);
        };
        let message = match ready.take() {
            Some(message) => Ok(message),
            None => batches.recv(),
        };
        self.deliver(message)
    }

    /// Waits up to `timeout` for the next batch, the end of the stream or its error, and keeps
    /// it for `next_batch`: true when `next_batch` will then return at once. Lets a caller
    /// that must not block for long (one holding an interpreter, one that reports a long wait)
    /// wait in slices. Starts the reader thread like `next_batch`.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<bool> {
        if matches!(self.state, State::Idle { .. }) {
            self.start()?;
        }
        let State::Running { batches, ready, .. } = &mut self.state else {
            return Ok(true);
        };
        if ready.is_some() {
            return Ok(true);
        }
        match batches.recv_timeout(timeout) {
            Ok(message) => {
                *ready = Some(message);
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) => Ok(false),
            // The thread ended: `next_batch` will say how, at once.
            Err(RecvTimeoutError::Disconnected) => Ok(true),
        }
    }

    fn deliver(
        &mut self,
        message: std::result::Result<Result<B::Batch>, RecvError>,
    ) -> Result<Option<B::Batch>> {
        match message {
            Ok(Ok(batch)) => Ok(Some(batch)),
            Ok(Err(error)) => {
                self.finish()?;
                Err(error)
            }
            Err(RecvError) => {
                // The thread ended: the stream is done, the reader was cancelled, or it panicked.
                self.finish()?;
                Ok(None)
            }
        }
    }

    /// Stops the thread and closes the source; later calls to `next_batch` return `Ok(None)`.
    pub fn close(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        let _ = self.finish();
    }

    /// A handle that stops this reader from another thread.
    pub fn canceller(&self) -> Canceller {
        Canceller(self.cancel.clone())
    }

    /// The live counters; they stay readable while another thread waits in `next_batch`.
    pub fn stats(&self) -> Arc<ReaderStats> {
        self.stats.clone()
    }

    /// True once the source has been asked for (and possibly opened).
    pub fn started(&self) -> bool {
        !matches!(self.state, State::Idle { .. })
    }

    fn start(&mut self) -> Result<()> {
        let State::Idle {
            path,
            options,
            builder,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Ok(());
        };
        let label = stream_label(&path, options.name.as_deref());
        let (sender, batches) = bounded(options.prefetch.max(1));
        let worker = Worker {
            label: label.clone(),
            path,
            options,
            cancel: self.cancel.clone(),
            stats: self.stats.clone(),
            sender,
        };
        let thread = std::thread::Builder::new()
            .name("pipemode-reader".into())
            .spawn(move || worker.run(builder))
            .map_err(|source| Error::Io {
                path: label.clone(),
                offset: None,
                source,
            })?;
        self.state = State::Running {
            batches,
            ready: None,
            thread,
            label,
        };
        Ok(())
    }

    /// Ends the thread: dropping the receiver wakes a thread blocked on a full queue, the cancel
    /// flag one blocked on the source. Reports a panic of the thread as an error.
    fn finish(&mut self) -> Result<()> {
        let State::Running {
            batches,
            thread,
            label,
            ..
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Ok(());
        };
        self.cancel.store(true, Ordering::Relaxed);
        drop(batches);
        thread.join().map_err(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Error::ReaderPanicked {
                path: label,
                message,
            }
        })
    }
}

impl<B: BatchBuilder> Drop for PrefetchReader<B> {
    fn drop(&mut self) {
        self.close();
    }
}

/// The stream's name in messages: the path, with the reader's name (e.g. a channel) in front.
pub fn stream_label(path: &std::path::Path, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} {}", path.display()),
        None => path.display().to_string(),
    }
}

struct Worker<T> {
    path: PathBuf,
    label: String,
    options: ReaderOptions,
    cancel: Arc<AtomicBool>,
    stats: Arc<ReaderStats>,
    sender: Sender<Result<T>>,
}

impl<T: Send> Worker<T> {
    fn run<B: BatchBuilder<Batch = T>>(self, mut builder: B) {
        let input = match source::open(
            &self.path,
            &self.label,
            &self.options.source,
            self.cancel.clone(),
            self.stats.source.clone(),
        ) {
            Ok(input) => input,
            Err(error) => return self.fail(error),
        };
        let mut framer = match Framer::new(input, self.options.format, self.options.framing) {
            Ok(framer) => framer,
            Err(error) => return self.fail(error),
        };
        let mut records: u64 = 0;
        let outcome = loop {
            let record = match framer.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            };
            if let Err(rejected) = builder.push(record.data) {
                break Err(Error::Record {
                    path: self.label.clone(),
                    record: records,
                    offset: record.offset,
                    message: rejected.0,
                });
            }
            records += 1;
            if builder.is_full() {
                self.stats.publish(&framer, records);
                if !self.send(Ok(builder.take())) {
                    return;
                }
            }
        };
        self.stats.publish(&framer, records);
        // Every record framed before the end (or the error) reaches the consumer first, unless
        // the consumer cancelled: then it wants nothing more. `take` may hand over less than
        // everything (a dense block ends at a batch boundary), hence the loop.
        while !builder.is_empty() && !self.cancel.load(Ordering::Relaxed) {
            if !self.send(Ok(builder.take())) {
                return;
            }
        }
        if let Err(error) = outcome {
            self.fail(error);
        }
    }

    /// Reports the error that ends the stream, unless the consumer cancelled: then the error
    /// is only the echo of that cancellation.
    fn fail(&self, error: Error) {
        if !self.cancel.load(Ordering::Relaxed) {
            self.send(Err(error));
        }
    }

    /// Sends one message, waiting while the queue is full. False when the consumer is gone.
    fn send(&self, mut message: Result<T>) -> bool {
        message = match self.sender.try_send(message) {
            Ok(()) => return true,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => return false,
            Err(crossbeam_channel::TrySendError::Full(message)) => message,
        };
        let waited = Instant::now();
        let sent = loop {
            match self.sender.send_timeout(message, CANCEL_CHECK_INTERVAL) {
                Ok(()) => break true,
                Err(SendTimeoutError::Disconnected(_)) => break false,
                Err(SendTimeoutError::Timeout(unsent)) => {
                    if self.cancel.load(Ordering::Relaxed) {
                        break false;
                    }
                    message = unsent;
                }
            }
        };
        let nanos = u64::try_from(waited.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats
            .consumer_wait_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        sent
    }
}
