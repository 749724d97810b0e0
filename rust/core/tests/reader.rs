//! The reader thread on real FIFOs and files: every record once and in order, bounded waits,
//! prompt cancellation, and errors that name the stream, record and offset.

mod common;

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use pipemode_core::source::SourceOptions;
use pipemode_core::{
    BatchBuilder, Error, Format, PrefetchReader, ReaderOptions, RecordBatchBuilder, RecordError,
};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pipemode-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Writes `data` into the FIFO at `path` from another thread, in small writes.
fn feed(path: &Path, data: Vec<u8>) -> thread::JoinHandle<std::io::Result<()>> {
    let path = path.to_owned();
    thread::spawn(move || {
        let mut fifo = OpenOptions::new().write(true).open(path)?;
        for chunk in data.chunks(7919) {
            fifo.write_all(chunk)?;
        }
        Ok(())
    })
}

fn options(format: Format) -> ReaderOptions {
    ReaderOptions {
        format,
        source: SourceOptions {
            open_timeout: Some(Duration::from_secs(10)),
            ..SourceOptions::default()
        },
        prefetch: 2,
        ..ReaderOptions::default()
    }
}

fn read_all<B: BatchBuilder>(reader: &mut PrefetchReader<B>) -> (Vec<B::Batch>, Option<Error>) {
    let mut batches = Vec::new();
    loop {
        match reader.next_batch() {
            Ok(Some(batch)) => batches.push(batch),
            Ok(None) => return (batches, None),
            Err(error) => return (batches, Some(error)),
        }
    }
}

fn sample(n: usize) -> Vec<Vec<u8>> {
    // Byte 10 (newline) never appears, so the records suit TextLine too.
    (0..n)
        .map(|i| vec![b'a' + (i % 26) as u8; i % 3000])
        .collect()
}

#[test]
fn fifo_and_file_read_every_record_once_in_order() {
    let dir = TempDir::new("roundtrip");
    for format in FORMATS {
        let records = sample(700);
        let data = encode(format, &records);
        let fifo = dir.0.join(format!("{format:?}.fifo"));
        mkfifo(&fifo);
        let writer = feed(&fifo, data.clone());
        let mut reader =
            PrefetchReader::new(&fifo, options(format), RecordBatchBuilder::new(64)).unwrap();
        let (batches, error) = read_all(&mut reader);
        writer.join().unwrap().unwrap();
        assert!(error.is_none(), "{error:?}");
        let read: Vec<Vec<u8>> = batches
            .iter()
            .flat_map(|b| b.iter().map(<[u8]>::to_vec))
            .collect();
        assert_eq!(read, records, "{format:?} from a FIFO");
        assert!(batches[..batches.len() - 1].iter().all(|b| b.len() == 64));
        let stats = reader.stats().snapshot();
        assert_eq!((stats.records, stats.bytes), (700, data.len() as u64));

        let file = dir.0.join(format!("{format:?}.file"));
        std::fs::write(&file, &data).unwrap();
        let mut reader =
            PrefetchReader::new(&file, options(format), RecordBatchBuilder::new(1000)).unwrap();
        let (batches, error) = read_all(&mut reader);
        assert!(error.is_none());
        assert_eq!(batches.len(), 1);
        assert_eq!(
            batches[0].iter().map(<[u8]>::to_vec).collect::<Vec<_>>(),
            records
        );
        assert_eq!(reader.next_batch().unwrap(), None);
    }
}

#[test]
fn batches_are_bounded_in_bytes_too() {
    let records = vec![vec![7u8; 1000]; 50];
    let reader_data = encode(Format::TfRecord, &records);
    let dir = TempDir::new("bytes");
    let file = dir.0.join("data");
    std::fs::write(&file, reader_data).unwrap();
    let builder = RecordBatchBuilder::with_max_bytes(1024, 4500);
    let mut reader = PrefetchReader::new(&file, options(Format::TfRecord), builder).unwrap();
    let (batches, _) = read_all(&mut reader);
    assert_eq!(
        batches.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![5; 10]
    );
}

#[test]
fn nothing_is_opened_before_the_first_batch() {
    let dir = TempDir::new("lazy");
    let fifo = dir.0.join("train_0");
    mkfifo(&fifo);
    let reader = PrefetchReader::new(&fifo, options(Format::RecordIo), RecordBatchBuilder::new(8));
    assert!(!reader.as_ref().unwrap().started());
    drop(reader); // no writer exists: had it opened the FIFO blocking, this test would hang
}

#[test]
fn missing_path_and_absent_writer_time_out() {
    let dir = TempDir::new("timeout");
    let mut opts = options(Format::RecordIo);
    opts.source.open_timeout = Some(Duration::from_millis(200));
    opts.name = Some("channel 'train'".into());
    let missing = dir.0.join("nothing");
    let mut reader =
        PrefetchReader::new(&missing, opts.clone(), RecordBatchBuilder::new(8)).unwrap();
    let error = reader.next_batch().unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                what: "the path to appear",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().starts_with("channel 'train' "), "{error}");
    assert_eq!(reader.next_batch().unwrap(), None);

    let fifo = dir.0.join("train_0");
    mkfifo(&fifo);
    let started = Instant::now();
    let mut reader = PrefetchReader::new(&fifo, opts, RecordBatchBuilder::new(8)).unwrap();
    let error = reader.next_batch().unwrap_err();
    assert!(error.to_string().contains("writer"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn cancelling_stops_a_reader_blocked_on_a_silent_writer() {
    let dir = TempDir::new("cancel");
    let fifo = dir.0.join("train_0");
    mkfifo(&fifo);
    // A writer that opens the FIFO, sends one record and then stays silent.
    let path = fifo.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = thread::spawn(move || {
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all(&encode(Format::TextLine, &[b"first".to_vec()]))
            .unwrap();
        let _ = done_rx.recv_timeout(Duration::from_secs(20));
        // The reader is gone: the next write fails with EPIPE.
        f.write_all(b"more\n").map_err(|e| e.kind())
    });
    let mut opts = options(Format::TextLine);
    opts.source.open_timeout = None;
    let mut reader = PrefetchReader::new(&fifo, opts, RecordBatchBuilder::new(2)).unwrap();
    let canceller = reader.canceller();
    let consumer = thread::spawn(move || read_all(&mut reader));
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    canceller.cancel();
    let (batches, error) = consumer.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(error.is_none(), "cancelling is not an error: {error:?}");
    assert!(
        batches.is_empty(),
        "a cancelled reader hands over nothing more, not even its partial batch"
    );
    done_tx.send(()).unwrap();
    assert_eq!(writer.join().unwrap(), Err(std::io::ErrorKind::BrokenPipe));
}

#[test]
fn dropping_a_reader_blocked_on_a_full_queue_returns_promptly() {
    let dir = TempDir::new("drop");
    let file = dir.0.join("data");
    std::fs::write(&file, encode(Format::RecordIo, &sample(5000))).unwrap();
    let mut reader =
        PrefetchReader::new(&file, options(Format::RecordIo), RecordBatchBuilder::new(1)).unwrap();
    assert!(reader.next_batch().unwrap().is_some());
    thread::sleep(Duration::from_millis(100)); // the thread fills the queue and blocks
    assert!(reader.stats().snapshot().records < 5000);
    let started = Instant::now();
    drop(reader);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A batch builder that first checks each record: `check` stands in for a decoder that rejects
/// a malformed Example, or for a builder with a bug.
struct Checked {
    inner: RecordBatchBuilder,
    check: fn(&[u8]) -> Result<(), RecordError>,
}

impl BatchBuilder for Checked {
    type Batch = pipemode_core::RecordBatch;
    fn push(&mut self, record: &[u8]) -> Result<(), RecordError> {
        (self.check)(record)?;
        self.inner.push(record)
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn is_full(&self) -> bool {
        self.inner.is_full()
    }
    fn take(&mut self) -> Self::Batch {
        self.inner.take()
    }
}

/// Rejects records that start with `!`, as a decoder would reject a malformed Example.
fn picky(record: &[u8]) -> Result<(), RecordError> {
    match record.first() {
        Some(b'!') => Err(RecordError("starts with '!'".into())),
        _ => Ok(()),
    }
}

/// Panics on a record that starts with `!`: a bug in a builder, as the reader sees it.
fn panicky(record: &[u8]) -> Result<(), RecordError> {
    assert!(record.first() != Some(&b'!'), "a builder bug");
    Ok(())
}

#[test]
fn a_rejected_record_is_an_error_with_its_index_and_offset() {
    let dir = TempDir::new("reject");
    let file = dir.0.join("data");
    let records = vec![b"a".to_vec(), b"b".to_vec(), b"!c".to_vec(), b"d".to_vec()];
    std::fs::write(&file, encode(Format::TextLine, &records)).unwrap();
    let builder = Checked {
        inner: RecordBatchBuilder::new(100),
        check: picky,
    };
    let mut reader = PrefetchReader::new(&file, options(Format::TextLine), builder).unwrap();
    let (batches, error) = read_all(&mut reader);
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].len(),
        2,
        "records before the rejected one are delivered"
    );
    match error.unwrap() {
        Error::Record {
            record,
            offset,
            message,
            path,
        } => {
            assert_eq!((record, offset), (2, 4));
            assert_eq!(message, "starts with '!'");
            assert_eq!(path, file.display().to_string());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reader.next_batch().unwrap(), None);
}

#[test]
fn config_errors_come_before_opening() {
    let mut opts = options(Format::RecordIo);
    opts.framing.max_corrupted_records_to_skip = 3;
    let error = PrefetchReader::new("/nonexistent", opts, RecordBatchBuilder::new(8)).err();
    assert!(matches!(error, Some(Error::Config(_))));
    assert!(matches!("CSV".parse::<Format>(), Err(Error::Config(_))));
}

#[test]
fn a_panicked_reader_thread_is_its_own_error_not_an_os_error() {
    let dir = TempDir::new("panic");
    let file = dir.0.join("data");
    std::fs::write(&file, encode(Format::TextLine, &[b"!".to_vec()])).unwrap();
    let builder = Checked {
        inner: RecordBatchBuilder::new(100),
        check: panicky,
    };
    let mut reader = PrefetchReader::new(&file, options(Format::TextLine), builder).unwrap();
    match reader.next_batch() {
        Err(Error::ReaderPanicked { path, message }) => {
            assert_eq!(path, file.display().to_string());
            assert!(message.contains("a builder bug"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reader.next_batch().unwrap(), None);
}
