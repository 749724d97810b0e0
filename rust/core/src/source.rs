//! Where the bytes come from: a FIFO (SageMaker's Pipe Mode), a regular file, or any other
//! readable path, opened within a bounded wait and read through one [`Input`] window.
//!
//! A Pipe Mode FIFO may not exist yet when the training script asks for it, and once it exists
//! its writer may not have opened it yet. Both waits are bounded by `open_timeout` and can be
//! cancelled, which is why FIFOs are opened `O_NONBLOCK` and waited on with `poll` rather than
//! with a blocking `open` that nothing could interrupt.
//!
//! This file is over the project's ~500 lines on purpose: it holds both the opening of FIFOs and
//! files and the one [`Input`] window every framer reads through, and splitting them would spread
//! one invariant over several files: every wait on the source, at open or mid-read, polls in
//! [`CANCEL_CHECK_INTERVAL`] steps, stops when cancelled and is counted in [`SourceStats`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::framing::Format;

/// How long one `poll`, one sleep or one blocked send lasts before the cancel flag is checked
/// again: the longest a closed reader's thread runs on.
pub const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// The smallest read buffer; smaller requests are raised to it.
pub const MIN_BUFFER_SIZE: usize = 64 * 1024;

/// The default read buffer, which is also the FIFO capacity asked for.
pub const DEFAULT_BUFFER_SIZE: usize = 1024 * 1024;

/// The most one read asks for. Cycling 1 MiB reads through the buffer cost about a third more
/// CPU per byte than reusing 256 KiB (perf and `time` on the reader draining a FIFO, 2-core
/// Xeon): the bytes of a large read have left the L2 cache before the framer gets to them.
const READ_CHUNK: usize = 256 * 1024;

/// An unread tail up to this size is moved to the buffer's front before the next read.
const SHORT_TAIL: usize = 64 * 1024;

/// How [`open`] waits for a path and how much it reads at a time.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Bound on the wait for the path to appear plus the wait for a FIFO's writer; `None`
    /// waits forever.
    pub open_timeout: Option<Duration>,
    /// Size of the reusable read buffer (for files, FIFOs and other streams alike), and the FIFO
    /// capacity asked for with `F_SETPIPE_SZ`.
    pub buffer_size: usize,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            open_timeout: Some(Duration::from_secs(120)),
            buffer_size: DEFAULT_BUFFER_SIZE,
        }
    }
}

/// Time spent blocked on the source, shared with whoever reports counters.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Nanoseconds spent waiting for the path to appear, for a FIFO's writer and for data from
    /// it, added up since the source was opened. Reads of a regular file are not waits.
    pub wait_nanos: AtomicU64,
}

impl SourceStats {
    fn add_wait(&self, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// What the reader thread is told when its consumer went away mid-wait. It is never shown to a
/// user: the consumer that would see it has closed the reader.
fn cancelled(label: &str) -> Error {
    Error::Io {
        path: label.to_owned(),
        offset: None,
        source: io::Error::new(io::ErrorKind::Interrupted, "reader closed"),
    }
}

fn io_error(label: &str, source: io::Error) -> Error {
    Error::Io {
        path: label.to_owned(),
        offset: None,
        source,
    }
}

/// Opens `path` once it exists (and, for a FIFO, once its writer has opened the other end).
///
/// `label` names the stream in errors (the path, or channel and path).
pub fn open(
    path: &Path,
    label: &str,
    options: &SourceOptions,
    cancel: Arc<AtomicBool>,
    stats: Arc<SourceStats>,
) -> Result<Input> {
    let started = Instant::now();
    let deadline = options.open_timeout.map(|timeout| started + timeout);
    wait_for_path(path, label, deadline, &cancel, &stats)?;
    // O_NONBLOCK: opening a FIFO's read end then returns at once even without a writer.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_error(label, e))?;
    let file_type = file.metadata().map_err(|e| io_error(label, e))?.file_type();
    let buffer_size = options.buffer_size.max(MIN_BUFFER_SIZE);
    if file_type.is_file() {
        return Input::file(file, label, buffer_size, cancel, stats);
    }
    if file_type.is_dir() {
        return Err(io_error(label, io::Error::from_raw_os_error(libc::EISDIR)));
    }
    if file_type.is_fifo() {
        raise_pipe_size(&file, buffer_size);
        wait_for_writer(&file, label, deadline, started, &cancel, &stats)?;
    }
    let from = StreamFrom::Fd(file);
    Ok(Input::stream(from, label, buffer_size, cancel, stats))
}

fn wait_for_path(
    path: &Path,
    label: &str,
    deadline: Option<Instant>,
    cancel: &AtomicBool,
    stats: &SourceStats,
) -> Result<()> {
    let started = Instant::now();
    loop {
        match std::fs::metadata(path) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(label, e)),
        }
        give_up_if_cancelled_or_late(label, "the path to appear", deadline, started, cancel)?;
        std::thread::sleep(CANCEL_CHECK_INTERVAL);
    }
    stats.add_wait(started);
    Ok(())
}

/// An error once the reader is cancelled or `deadline` has passed while waiting (since
/// `started`) for `what`.
fn give_up_if_cancelled_or_late(
    label: &str,
    what: &'static str,
    deadline: Option<Instant>,
    started: Instant,
    cancel: &AtomicBool,
) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(cancelled(label));
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Err(Error::Timeout {
            path: label.to_owned(),
            what,
            waited: started.elapsed(),
        });
    }
    Ok(())
}

/// Asks for a FIFO capacity of `size` bytes (capped by /proc/sys/fs/pipe-max-size), so the
/// writer can run further ahead. Refusal (an unprivileged user over the per-user pipe budget)
/// only costs speed, so it is not an error.
fn raise_pipe_size(file: &File, size: usize) {
    let max = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(1 << 20);
    let wanted = libc::c_int::try_from(size.min(max)).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on a file descriptor we own; F_SETPIPE_SZ takes an int and touches no memory.
    unsafe {
        libc::fcntl(file.as_raw_fd(), libc::F_SETPIPE_SZ, wanted);
    }
}

/// Waits until the FIFO has data or its writer has come and gone. Until a writer has opened
/// the FIFO, a read would return 0 (end of file) at once, so nothing may be read before this.
fn wait_for_writer(
    file: &File,
    label: &str,
    deadline: Option<Instant>,
    started: Instant,
    cancel: &AtomicBool,
    stats: &SourceStats,
) -> Result<()> {
    let wait_started = Instant::now();
    loop {
        if poll_readable(file, CANCEL_CHECK_INTERVAL).map_err(|e| io_error(label, e))? {
            stats.add_wait(wait_started);
            return Ok(());
        }
        let what = "a writer to open the FIFO and send data";
        give_up_if_cancelled_or_late(label, what, deadline, started, cancel)?;
    }
}

/// True when `file` is readable (data, or end of file) within `timeout`.
fn poll_readable(file: &File, timeout: Duration) -> io::Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd, passed with its count.
    let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
    if ready < 0 {
        let err = io::Error::last_os_error();
        return if err.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(err)
        };
    }
    Ok(ready > 0)
}

/// A window on the stream: the bytes from the current position up to what has been read.
///
/// Framers ask for `fill(n)` bytes, look at `window()` and `take` what they used. The window is
/// a reusable buffer that is compacted and refilled, and that grows only while bytes keep
/// arriving, so a corrupt length can never make it allocate more than twice what the stream
/// really holds, and never past the most its framer asks for at once (see
/// [`Input::frame_as`]), so the record cap bounds it too.
///
/// Regular files are read like streams, with `read` into the buffer, not mapped: a file
/// truncated under a mapping kills the process with SIGBUS at the next touch of a page past
/// its new end, and a training job's input may be rewritten (`cp` over it) while it is read.
/// A file that ends before the size it had when opened is an error naming the offset.
pub struct Input {
    kind: Kind,
    /// The stream's name in errors.
    label: String,
    /// The framing, as errors about the stream itself name it.
    format: &'static str,
    start: usize,
    end: usize,
    /// Stream offset of `start`.
    offset: u64,
    eof: bool,
    /// The buffer grows past its first size only up to this (or what one `fill` needs).
    max_buffer: usize,
    /// Set by the consumer to stop a wait for a slow writer.
    cancel: Arc<AtomicBool>,
    /// Counts the time spent waiting for the writer.
    stats: Arc<SourceStats>,
}

enum Kind {
    Bytes(Vec<u8>),
    Stream { from: StreamFrom, buf: Vec<u8> },
}

enum StreamFrom {
    /// A regular file, which held `len` bytes when it was opened.
    File { file: File, len: u64 },
    /// A FIFO or other non-regular file, read `O_NONBLOCK` with `poll` so waits can be cancelled.
    Fd(File),
    /// Any blocking reader: in-process pipes, decompressors, tests that vary the read sizes.
    Read(Box<dyn io::Read + Send>),
}

impl Input {
    fn file(
        file: File,
        label: &str,
        buffer_size: usize,
        cancel: Arc<AtomicBool>,
        stats: Arc<SourceStats>,
    ) -> Result<Input> {
        let len = file.metadata().map_err(|e| io_error(label, e))?.len();
        // Read-ahead hint only; its failure changes nothing but speed.
        // SAFETY: fadvise on a file descriptor we own touches no memory.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        }
        let from = StreamFrom::File { file, len };
        Ok(Input::stream(from, label, buffer_size, cancel, stats))
    }

    fn stream(
        from: StreamFrom,
        label: &str,
        buffer_size: usize,
        cancel: Arc<AtomicBool>,
        stats: Arc<SourceStats>,
    ) -> Input {
        Input {
            kind: Kind::Stream {
                from,
                buf: vec![0; buffer_size],
            },
            label: label.to_owned(),
            format: "byte",
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
            max_buffer: usize::MAX,
            cancel,
            stats,
        }
    }

    /// A stream read from any blocking reader through a buffer of `buffer_size` bytes (which
    /// grows for records larger than that).
    pub fn from_read(reader: Box<dyn io::Read + Send>, label: &str, buffer_size: usize) -> Input {
        let (from, buffer_size) = (StreamFrom::Read(reader), buffer_size.max(1));
        Self::stream(from, label, buffer_size, Arc::default(), Arc::default())
    }

    /// An in-memory stream, for tests and fuzzing: the bytes as a regular file would give them.
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Input {
        let end = bytes.len();
        Input {
            kind: Kind::Bytes(bytes),
            label: label.to_owned(),
            format: "byte",
            start: 0,
            end,
            offset: 0,
            eof: true,
            max_buffer: usize::MAX,
            cancel: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// Called by the framer that reads this input: `format` names the stream in errors about
    /// the stream itself (a file that shrank), and `max_fill` is the most the framer will ever
    /// ask [`Input::fill`] for: its longest record plus framing. The buffer then never grows
    /// past that (nor past its first size), so a line without end under a 2 GiB cap stops at
    /// 2 GiB instead of doubling to 4 GiB first.
    pub fn frame_as(&mut self, format: Format, max_fill: usize) {
        self.format = format.name();
        self.max_buffer = max_fill;
    }

    /// The bytes read but not yet taken.
    #[inline]
    pub fn window(&self) -> &[u8] {
        match &self.kind {
            Kind::Bytes(buf) | Kind::Stream { buf, .. } => &buf[self.start..self.end],
        }
    }

    /// Stream offset of the first byte of the window.
    #[inline]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The stream's name in errors.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// True when the source has ended: the window is all that is left.
    #[inline]
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Consumes `n` bytes of the window and returns them. They stay valid until the next `fill`.
    #[inline]
    pub fn take(&mut self, n: usize) -> &[u8] {
        debug_assert!(n <= self.end - self.start);
        let from = self.start;
        self.start += n;
        self.offset += n as u64;
        match &self.kind {
            Kind::Bytes(buf) | Kind::Stream { buf, .. } => &buf[from..self.start],
        }
    }

    /// Reads until the window holds at least `need` bytes or the source ends, and returns the
    /// window's length (less than `need` only at the end of the source).
    ///
    /// Waiting for a slow writer stops when the cancel flag is set.
    #[inline]
    pub fn fill(&mut self, need: usize) -> Result<usize> {
        if self.end - self.start >= need || self.eof {
            return Ok(self.end - self.start);
        }
        self.fill_slow(need)
    }

    #[cold]
    fn fill_slow(&mut self, need: usize) -> Result<usize> {
        let Kind::Stream { from, buf } = &mut self.kind else {
            unreachable!("in-memory inputs are always at eof");
        };
        // What the buffer may grow to: never less than this fill needs, so a framer asking for
        // more than it announced still gets it rather than a false end of the stream.
        let ceiling = self.max_buffer.max(need);
        while self.end - self.start < need && !self.eof {
            // A fast writer never lets a read block; look at the cancel flag here too.
            if self.cancel.load(Ordering::Relaxed) {
                return Err(cancelled(&self.label));
            }
            let unread = self.end - self.start;
            // Records of more than a quarter of the buffer would have most of their bytes moved
            // to the front again and again; with room for several records, each byte moves
            // about once at most. Growing only while a quarter of the buffer is unread data
            // keeps it within a few times the bytes that really arrived.
            if buf.len() - self.start < need && need > buf.len() / 4 && unread >= buf.len() / 4 {
                grow(buf, buf.len().saturating_mul(2).min(ceiling));
            }
            // Move the unread tail to the front when what is needed does not fit behind it,
            // and also whenever the tail is short (a partial record): reads then keep landing
            // in the same cache-hot start of the buffer instead of cycling through all of it.
            if self.start > 0 && (buf.len() - self.start < need || unread <= SHORT_TAIL) {
                buf.copy_within(self.start..self.end, 0);
                self.end = unread;
                self.start = 0;
            }
            if buf.len() < need && self.end == buf.len() {
                // Grow only once the buffer is full of bytes that really arrived.
                grow(
                    buf,
                    buf.len().saturating_mul(2).min(need).max(buf.len() + 1),
                );
            }
            // One read fills at most READ_CHUNK of the buffer, so the bytes it brings are still
            // in the CPU cache when they are framed, checked and copied into a batch.
            let room = self.end..buf.len().min(self.end + READ_CHUNK);
            debug_assert!(!room.is_empty(), "an empty read would look like the end");
            let read = match from {
                StreamFrom::File { file, .. } => (&*file).read(&mut buf[room]),
                StreamFrom::Fd(file) => read_some(file, &mut buf[room], &self.cancel, &self.stats),
                StreamFrom::Read(reader) => reader.read(&mut buf[room]),
            };
            let read_to = self.offset + unread as u64;
            match read {
                Ok(0) => {
                    self.eof = true;
                    if let StreamFrom::File { file, len } = from {
                        check_not_shrunk(file, *len, read_to, &self.label, self.format)?;
                    }
                }
                Ok(n) => self.end += n,
                // Retried unless it was the cancel flag that interrupted the wait.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: self.label.clone(),
                        offset: Some(read_to),
                        source,
                    })
                }
            }
        }
        Ok(self.end - self.start)
    }
}

/// Grows `buf` to exactly `len` bytes (if longer): `resize` alone would reserve up to twice
/// that, past the ceiling the caller chose.
fn grow(buf: &mut Vec<u8>, len: usize) {
    if len > buf.len() {
        buf.reserve_exact(len - buf.len());
        buf.resize(len, 0);
    }
}

/// An error when a regular file ended at `read_to` although it held `len` bytes when opened:
/// it was truncated (or rewritten) under the reader, and its records past that are lost.
fn check_not_shrunk(
    file: &File,
    len: u64,
    read_to: u64,
    label: &str,
    format: &'static str,
) -> Result<()> {
    if read_to >= len {
        return Ok(());
    }
    let now = file.metadata().map_or_else(
        |_| String::new(),
        |m| format!(" (it holds {} now)", m.len()),
    );
    Err(Error::Corrupt {
        path: label.to_owned(),
        format,
        offset: read_to,
        message: format!(
            "truncated: the file ends here, but it held {len} bytes when it was opened{now}: \
             it was truncated or rewritten while being read"
        ),
    })
}

/// One read into `buf` (non-empty); waits with `poll` while the stream has nothing, checking
/// `cancel` between waits. Returns 0 only at the end of the stream.
fn read_some(
    file: &File,
    buf: &mut [u8],
    cancel: &AtomicBool,
    stats: &SourceStats,
) -> io::Result<usize> {
    loop {
        // SAFETY: reads at most buf.len() bytes into memory we own exclusively.
        let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => {
                let waited = Instant::now();
                while !poll_readable(file, CANCEL_CHECK_INTERVAL)? {
                    if cancel.load(Ordering::Relaxed) {
                        stats.add_wait(waited);
                        return Err(io::Error::new(io::ErrorKind::Interrupted, "reader closed"));
                    }
                }
                stats.add_wait(waited);
            }
            io::ErrorKind::Interrupted => {}
            _ => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer_len(input: &Input) -> usize {
        match &input.kind {
            Kind::Stream { buf, .. } => buf.len(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn asking_for_more_than_arrives_allocates_only_what_arrived() {
        let data = vec![7u8; 100_000];
        let mut input = Input::from_read(Box::new(io::Cursor::new(data)), "test", 1024);
        assert_eq!(input.fill(1 << 29).unwrap(), 100_000);
        assert!(input.at_eof());
        assert!(buffer_len(&input) <= 4 * 100_000, "{}", buffer_len(&input));
    }

    /// Reads `path` in steps of 4 KiB, truncating it to `cut` bytes once `at` bytes are read,
    /// and returns how far it got and how it ended.
    fn read_truncating(path: &Path, at: u64, cut: u64) -> (u64, Result<()>) {
        let options = SourceOptions {
            buffer_size: MIN_BUFFER_SIZE,
            ..SourceOptions::default()
        };
        let mut input = open(path, "file", &options, Arc::default(), Arc::default()).unwrap();
        loop {
            if input.offset() == at {
                File::options()
                    .write(true)
                    .open(path)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
            }
            match input.fill(4096) {
                Ok(0) => return (input.offset(), Ok(())),
                Ok(n) => drop(input.take(n.min(4096))),
                Err(error) => return (input.offset(), Err(error)),
            }
        }
    }

    #[test]
    fn a_file_that_shrinks_while_read_is_an_error_at_the_offset_reached() {
        let path = std::env::temp_dir().join(format!("pipemode-shrink-{}", std::process::id()));
        let len = 1 << 20;
        for cut in [0, 300_000, 300_001] {
            std::fs::write(&path, vec![5u8; len]).unwrap();
            let (reached, ended) = read_truncating(&path, 4096, cut);
            let error = ended
                .expect_err("a shrunk file is not a clean end")
                .to_string();
            // Bytes read ahead before the cut are still handed out; nothing past it.
            let read_to = cut.max(MIN_BUFFER_SIZE as u64);
            assert!(reached <= read_to, "{reached} > {read_to}");
            assert!(
                error.starts_with(&format!(
                    "file: corrupt byte stream at byte offset {read_to}: "
                )),
                "{error}"
            );
            assert!(
                error.contains(&format!(
                    "held {len} bytes when it was opened (it holds {cut} now)"
                )),
                "{error}"
            );
        }
        // Growing is fine: what was there at the end is read.
        std::fs::write(&path, vec![5u8; len]).unwrap();
        let (reached, ended) = read_truncating(&path, u64::MAX, 0);
        let _ = std::fs::remove_file(&path);
        assert!(ended.is_ok());
        assert_eq!(reached, len as u64);
    }

    #[test]
    fn large_records_grow_the_buffer_to_hold_several() {
        let record = 10_000;
        let data = vec![1u8; record * 50];
        let mut input = Input::from_read(Box::new(io::Cursor::new(data)), "test", 1024);
        let mut offset = 0;
        while input.fill(record).unwrap() >= record {
            assert_eq!(input.offset(), offset);
            assert_eq!(input.take(record).len(), record);
            offset += record as u64;
        }
        assert_eq!(offset, 500_000);
        let len = buffer_len(&input);
        assert!((3 * record..=16 * record).contains(&len), "{len}");
    }
}
