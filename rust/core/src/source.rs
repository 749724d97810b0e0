//! Where the bytes come from: a FIFO (SageMaker's Pipe Mode), a regular file, or any other
//! readable path, opened within a bounded wait and read through one [`Input`] window.
//!
//! A Pipe Mode FIFO may not exist yet when the training script asks for it, and once it exists
//! its writer may not have opened it yet. Both waits are bounded by `open_timeout` and can be
//! cancelled, which is why FIFOs are opened `O_NONBLOCK` and waited on with `poll` rather than
//! with a blocking `open` that nothing could interrupt.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::{Advice, Mmap, UncheckedAdvice};

use crate::error::{Error, Result};

/// How long one `poll` or one sleep lasts before the cancel flag is checked again.
const CANCEL_CHECK_INTERVAL: Duration = Duration::from_millis(20);

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

#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Bound on the wait for the path to appear plus the wait for a FIFO's writer; `None`
    /// waits forever.
    pub open_timeout: Option<Duration>,
    /// Size of the reusable read buffer for FIFOs and other streams, and the FIFO capacity
    /// asked for with `F_SETPIPE_SZ`.
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
        return Input::mapped(&file, label, cancel, stats);
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
/// Framers ask for `fill(n)` bytes, look at `window()` and `take` what they used. For a regular
/// file the window is the rest of the mmap; for a stream it is a reusable buffer that is
/// compacted and refilled, and that grows only while bytes keep arriving, so a corrupt length
/// can never make it allocate more than twice what the stream really holds.
pub struct Input {
    kind: Kind,
    /// The stream's name in errors.
    label: String,
    start: usize,
    end: usize,
    /// Stream offset of `start`.
    offset: u64,
    eof: bool,
    /// For a mapped file: the window position at which to populate the next stretch of the map
    /// and release the one behind (`usize::MAX` for other inputs).
    next_advice: usize,
    /// A mapped file's bytes before this have been given back (see `advise_map`).
    released_to: usize,
    /// Set by the consumer to stop a wait for a slow writer.
    cancel: Arc<AtomicBool>,
    /// Counts the time spent waiting for the writer.
    stats: Arc<SourceStats>,
}

enum Kind {
    Mapped(Option<Mmap>),
    Bytes(Vec<u8>),
    Stream { from: StreamFrom, buf: Vec<u8> },
}

enum StreamFrom {
    /// A FIFO or other non-regular file, read `O_NONBLOCK` with `poll` so waits can be cancelled.
    Fd(File),
    /// Any blocking reader: in-process pipes, decompressors, tests that vary the read sizes.
    Read(Box<dyn io::Read + Send>),
}

impl Input {
    fn mapped(
        file: &File,
        label: &str,
        cancel: Arc<AtomicBool>,
        stats: Arc<SourceStats>,
    ) -> Result<Input> {
        let len = file.metadata().map_err(|e| io_error(label, e))?.len();
        let len = usize::try_from(len).map_err(|_| {
            io_error(
                label,
                io::Error::new(io::ErrorKind::InvalidInput, "file too large"),
            )
        })?;
        let map = if len == 0 {
            None // mmap of length 0 is an error; an empty file is simply an empty stream
        } else {
            // SAFETY: the map is read-only. A file truncated by someone else while we read it
            // would raise SIGBUS; input files of a training job are not rewritten under it.
            let map = unsafe { Mmap::map(file) }.map_err(|e| io_error(label, e))?;
            // Read-ahead hint only; its failure changes nothing but speed.
            let _ = map.advise(Advice::Sequential);
            Some(map)
        };
        let end = map.as_ref().map_or(0, |m| m.len());
        Ok(Input {
            kind: Kind::Mapped(map),
            label: label.to_owned(),
            start: 0,
            end,
            offset: 0,
            eof: true,
            next_advice: 0,
            released_to: 0,
            cancel,
            stats,
        })
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
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
            next_advice: usize::MAX,
            released_to: 0,
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
            start: 0,
            end,
            offset: 0,
            eof: true,
            next_advice: usize::MAX,
            released_to: 0,
            cancel: Arc::default(),
            stats: Arc::default(),
        }
    }

    /// The bytes read but not yet taken.
    #[inline]
    pub fn window(&self) -> &[u8] {
        match &self.kind {
            Kind::Mapped(Some(map)) => &map[self.start..self.end],
            Kind::Mapped(None) => &[],
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
        if self.start >= self.next_advice {
            self.advise_map(from);
        }
        match &self.kind {
            Kind::Mapped(Some(map)) => &map[from..self.start],
            Kind::Mapped(None) => &[],
            Kind::Bytes(buf) | Kind::Stream { buf, .. } => &buf[from..self.start],
        }
    }

    /// Keeps a mapped file's footprint to a sliding window: pages ahead are mapped in one call
    /// (instead of one page fault per few pages) and pages behind are unmapped, so the resident
    /// size stays the same for a 400 MB or a 40 GB file. The page cache keeps the data either
    /// way; touching a released page again only faults it back in.
    #[cold]
    fn advise_map(&mut self, done: usize) {
        const WINDOW: usize = 32 << 20;
        let Kind::Mapped(Some(map)) = &self.kind else {
            self.next_advice = usize::MAX;
            return;
        };
        let page = page_size();
        let released = done / page * page;
        let ahead = WINDOW.min(map.len() - self.start);
        // Hints only: an older kernel without MADV_POPULATE_READ just faults pages in as before.
        let _ = map.advise_range(Advice::PopulateRead, self.start / page * page, ahead);
        // Everything up to half a window behind the record just taken, from where the previous
        // call stopped: a record longer than the window moves further than one window per call.
        let release_end = released.saturating_sub(WINDOW / 2) / page * page;
        let release_start = self.released_to;
        if release_end > release_start {
            // SAFETY: DONTNEED on a read-only file mapping drops our page table entries only;
            // a later access reads the same bytes from the page cache again.
            let _ = unsafe {
                map.unchecked_advise_range(
                    UncheckedAdvice::DontNeed,
                    release_start,
                    release_end - release_start,
                )
            };
            self.released_to = release_end;
        }
        self.next_advice = self.start + WINDOW / 2;
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
            unreachable!("mapped and in-memory inputs are always at eof");
        };
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
                buf.resize(buf.len().saturating_mul(2), 0);
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
                let grown = buf.len().saturating_mul(2).min(need).max(buf.len() + 1);
                buf.resize(grown, 0);
            }
            // One read fills at most READ_CHUNK of the buffer, so the bytes it brings are still
            // in the CPU cache when they are framed, checked and copied into a batch.
            let room = self.end..buf.len().min(self.end + READ_CHUNK);
            debug_assert!(!room.is_empty(), "an empty read would look like the end");
            let read = match from {
                StreamFrom::Fd(file) => read_some(file, &mut buf[room], &self.cancel, &self.stats),
                StreamFrom::Read(reader) => reader.read(&mut buf[room]),
            };
            match read {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                // Retried unless it was the cancel flag that interrupted the wait.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: self.label.clone(),
                        offset: Some(self.offset + (self.end - self.start) as u64),
                        source,
                    })
                }
            }
        }
        Ok(self.end - self.start)
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
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

    /// Resident kilobytes of this process's mappings of `path`, from /proc/self/smaps.
    fn resident_kb(path: &Path) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let name = path.to_str().unwrap();
        let mut in_mapping = false;
        let mut kb = 0;
        for line in smaps.lines() {
            // A mapping starts with its address range, "start-end" in hex; its path ends it.
            let first = line.split_whitespace().next().unwrap_or("");
            let range = first.split('-').map(|a| u64::from_str_radix(a, 16));
            if first.contains('-') && range.clone().all(|a| a.is_ok()) {
                in_mapping = line.ends_with(name);
                continue;
            }
            if in_mapping {
                if let Some(rest) = line.strip_prefix("Rss:") {
                    kb += rest
                        .trim()
                        .trim_end_matches(" kB")
                        .parse::<usize>()
                        .unwrap();
                }
            }
        }
        kb
    }

    #[test]
    fn a_mapped_file_stays_a_sliding_window_past_records_longer_than_it() {
        const MIB: usize = 1 << 20;
        let record = 40 * MIB; // longer than the 32 MiB window
        let path = std::env::temp_dir().join(format!("pipemode-window-{}", std::process::id()));
        {
            let mut file = File::create(&path).unwrap();
            let chunk = vec![1u8; 8 * MIB];
            for _ in 0..(8 * record / chunk.len()) {
                io::Write::write_all(&mut file, &chunk).unwrap();
            }
        }
        let options = SourceOptions::default();
        let mut input = open(&path, "test", &options, Arc::default(), Arc::default()).unwrap();
        let mut touched = 0u64;
        while input.fill(record).unwrap() >= record {
            // Read every page, as a batch copying the record would.
            touched += input
                .take(record)
                .iter()
                .step_by(4096)
                .map(|&b| b as u64)
                .sum::<u64>();
        }
        let resident = resident_kb(&path) * 1024;
        let _ = std::fs::remove_file(&path);
        assert_eq!(touched, (8 * record / 4096) as u64);
        // The last record, half a window behind it and the window ahead; before, each record
        // past the first left 8 MiB between two released stretches: 56 MiB more.
        assert!(
            resident < 2 * record + 16 * MIB,
            "{} MiB resident",
            resident / MIB
        );
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
