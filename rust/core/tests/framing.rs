//! Properties of the framers: written records read back exactly, in any read-size pattern;
//! truncated and arbitrary streams give records or an error, never a panic or a wrong record.

mod common;

use common::*;
use pipemode_core::framing::{masked_crc32c, FramingOptions, RECORDIO_MAGIC};
use pipemode_core::source::Input;
use pipemode_core::{Error, Format, Multipart};
use proptest::prelude::*;

fn records_for(format: Format) -> BoxedStrategy<Vec<Vec<u8>>> {
    let magic = RECORDIO_MAGIC.to_le_bytes().to_vec();
    // Records that often hold the RecordIO magic word, aligned or not, to exercise multipart.
    let byte_soup = prop::collection::vec(
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..40),
            1 => Just(magic.clone()),
            1 => Just(b"\n".to_vec()),
        ],
        0..6,
    )
    .prop_map(|pieces| pieces.concat());
    let record = prop_oneof![8 => byte_soup, 1 => prop::collection::vec(any::<u8>(), 0..5000)];
    let records = prop::collection::vec(record, 0..20);
    if format == Format::TextLine {
        records
            .prop_map(|rs| {
                rs.into_iter()
                    .map(|r| r.into_iter().filter(|&b| b != b'\n').collect())
                    .collect()
            })
            .boxed()
    } else {
        records.boxed()
    }
}

fn format_strategy() -> impl Strategy<Value = Format> {
    prop::sample::select(FORMATS.to_vec())
}

fn is_corrupt(error: &Error) -> bool {
    matches!(error, Error::Corrupt { .. })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn records_round_trip(
        (format, records) in format_strategy().prop_flat_map(|f| (Just(f), records_for(f))),
    ) {
        let data = encode(format, &records);
        let (read, error) = frame_bytes(format, &data);
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(read, records);
    }

    #[test]
    fn round_trip_through_any_read_sizes(
        (format, records) in format_strategy().prop_flat_map(|f| (Just(f), records_for(f))),
        sizes in prop::collection::vec(1usize..300, 1..5),
        buffer in 1usize..64,
    ) {
        let data = encode(format, &records);
        let (read, error) = frame_chunked(format, &data, sizes, buffer);
        prop_assert!(error.is_none(), "{error:?}");
        prop_assert_eq!(read, records);
    }

    /// Every cut of a stream gives a prefix of its records, then a clean end exactly when the
    /// cut falls on a record boundary and a Corrupt error otherwise. TextLine has no framing to
    /// break: a cut stream is split like any other text.
    #[test]
    fn truncation_gives_a_prefix_then_an_error(
        (format, records) in format_strategy().prop_flat_map(|f| (Just(f), records_for(f))),
        cut_fraction in 0.0f64..1.0,
    ) {
        let data = encode(format, &records);
        let cut = (data.len() as f64 * cut_fraction) as usize;
        let (read, error) = frame_bytes(format, &data[..cut]);
        if format == Format::TextLine {
            prop_assert!(error.is_none());
            prop_assert_eq!(read, split_lines(&data[..cut]));
        } else {
            prop_assert!(read.len() <= records.len());
            prop_assert_eq!(&read[..], &records[..read.len()]);
            let boundary = encode(format, &read).len() == cut;
            match error {
                None => prop_assert!(boundary, "a cut inside a record at {cut} ended cleanly"),
                Some(e) => prop_assert!(is_corrupt(&e) && !boundary, "{e:?}"),
            }
        }
    }

    /// One flipped byte in a TFRecord stream is caught by a CRC: never a changed record.
    #[test]
    fn tfrecord_detects_any_flipped_byte(
        records in records_for(Format::TfRecord).prop_filter("non-empty", |r| !r.is_empty()),
        at_fraction in 0.0f64..1.0,
        flip in 1u8..=255,
    ) {
        let mut data = encode(Format::TfRecord, &records);
        let at = ((data.len() as f64) * at_fraction) as usize;
        data[at] ^= flip;
        let (read, error) = frame_bytes(Format::TfRecord, &data);
        prop_assert_eq!(&read[..], &records[..read.len()]);
        prop_assert!(error.is_some());
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        format in format_strategy(),
        data in prop::collection::vec(any::<u8>(), 0..2000),
        sizes in prop::collection::vec(1usize..100, 1..4),
    ) {
        let whole = frame_bytes(format, &data);
        let chunked = frame_chunked(format, &data, sizes, 16);
        prop_assert_eq!(whole.0, chunked.0);
        prop_assert_eq!(whole.1.is_some(), chunked.1.is_some());
    }

    /// Streams that start like valid RecordIO then go wrong, so the fuzzing reaches past the
    /// magic check: multipart flags, lengths and padding.
    #[test]
    fn arbitrary_recordio_headers_never_panic(
        parts in prop::collection::vec((0u32..8, 0u32..64, prop::collection::vec(any::<u8>(), 0..70)), 0..8),
    ) {
        let mut data = Vec::new();
        for (cflag, length, payload) in parts {
            data.extend_from_slice(&RECORDIO_MAGIC.to_le_bytes());
            data.extend_from_slice(&((cflag << 29) | length).to_le_bytes());
            data.extend_from_slice(&payload);
        }
        let _ = frame_bytes(Format::RecordIo, &data);
        let _ = frame_chunked(Format::RecordIo, &data, vec![3, 7], 4);
    }
}

#[test]
fn masked_crc_matches_the_reference_values() {
    let crc32c = |data: &[u8]| crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    // Unmasking the masked CRC gives the CRC back (TensorFlow's crc32c_test checks the same).
    let crc = crc32c(b"foo");
    let masked = masked_crc32c(b"foo");
    let unmasked = masked.wrapping_sub(0xa282_ead8).rotate_left(15);
    assert_eq!(unmasked, crc);
}

#[test]
fn tfrecord_matches_tensorflow_bytes() {
    // tf.io.TFRecordWriter writing b"hello" produces exactly these 21 bytes.
    let data = encode(Format::TfRecord, &[b"hello".to_vec()]);
    let mut expected = 5u64.to_le_bytes().to_vec();
    expected.extend_from_slice(&masked_crc32c(&5u64.to_le_bytes()).to_le_bytes());
    expected.extend_from_slice(b"hello");
    expected.extend_from_slice(&masked_crc32c(b"hello").to_le_bytes());
    assert_eq!(data, expected);
}

#[test]
fn recordio_splits_on_aligned_magic_only_as_dmlc_does() {
    let magic = RECORDIO_MAGIC.to_le_bytes();
    let record = [b"abcd".as_slice(), &magic, b"ef", &magic].concat(); // 2nd magic unaligned
    let data = encode(Format::RecordIo, std::slice::from_ref(&record));
    let lrecord = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    assert_eq!(lrecord(4), (1 << 29) | 4); // first part: "abcd"
    assert_eq!(lrecord(16), (3 << 29) | 6); // last part: "ef" + unaligned magic
    assert_eq!(data.len(), 8 + 4 + 8 + 8);
    assert_eq!(frame_bytes(Format::RecordIo, &data).0, vec![record.clone()]);

    // The incumbent's plain join drops the magic word the writer split on.
    let (concat, error) = frame_all(
        Input::from_bytes(data, "memory"),
        Format::RecordIo,
        FramingOptions {
            multipart: Multipart::Concat,
            max_corrupted_records_to_skip: 0,
            ..FramingOptions::default()
        },
    );
    assert!(error.is_none());
    assert_eq!(concat, vec![[b"abcd".as_slice(), b"ef", &magic].concat()]);
}

#[test]
fn recordio_record_of_only_magic_words() {
    let magic = RECORDIO_MAGIC.to_le_bytes();
    for n in 1..4 {
        let record = magic.repeat(n);
        let data = encode(Format::RecordIo, &[record.clone(), Vec::new()]);
        assert_eq!(
            frame_bytes(Format::RecordIo, &data).0,
            vec![record, Vec::new()]
        );
    }
}

#[test]
fn recordio_errors_say_what_was_wrong_and_where() {
    let good = encode(Format::RecordIo, &[b"abc".to_vec()]);
    let mut bad_magic = good.clone();
    bad_magic.extend_from_slice(&[0u8; 8]);
    let error = frame_bytes(Format::RecordIo, &bad_magic).1.unwrap();
    assert_eq!(error.offset(), Some(12));
    assert!(
        error
            .to_string()
            .contains("bad magic 0x00000000, expected 0xced7230a"),
        "{error}"
    );
    assert!(error
        .to_string()
        .starts_with("memory: corrupt RecordIO stream at byte offset 12"));

    let last_without_first = [RECORDIO_MAGIC.to_le_bytes(), (3u32 << 29).to_le_bytes()].concat();
    let error = frame_bytes(Format::RecordIo, &last_without_first)
        .1
        .unwrap();
    assert!(
        error.to_string().contains("last part without a first part"),
        "{error}"
    );

    let first_only = [RECORDIO_MAGIC.to_le_bytes(), (1u32 << 29).to_le_bytes()].concat();
    let error = frame_bytes(Format::RecordIo, &first_only).1.unwrap();
    assert!(error.to_string().contains("truncated multipart"), "{error}");

    let first_then_whole = [first_only.clone(), good.clone()].concat();
    let error = frame_bytes(Format::RecordIo, &first_then_whole).1.unwrap();
    assert!(
        error
            .to_string()
            .contains("whole-record part at byte offset 8 inside"),
        "{error}"
    );
    assert_eq!(error.offset(), Some(0));
}

#[test]
fn absurd_recordio_length_does_not_allocate_it() {
    // A 512 MiB length with 4 bytes behind it: a truncation error, with no 512 MiB buffer.
    let data = [
        RECORDIO_MAGIC.to_le_bytes(),
        ((1u32 << 29) - 1).to_le_bytes(),
        [1, 2, 3, 4],
    ]
    .concat();
    let (_, error) = frame_chunked(Format::RecordIo, &data, vec![5], 8);
    assert!(error.unwrap().to_string().contains("truncated record"));
}

#[test]
fn tfrecord_skips_consecutive_bad_data_crcs_up_to_the_limit() {
    let good = encode(Format::TfRecord, &[b"ok".to_vec()]);
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 1;
    let stream = [&good[..], &bad, &bad, &good, &bad, &bad, &good].concat();
    let frame = |max| {
        let mut framer = pipemode_core::framing::Framer::new(
            Input::from_bytes(stream.clone(), "memory"),
            Format::TfRecord,
            FramingOptions {
                multipart: Multipart::Dmlc,
                max_corrupted_records_to_skip: max,
                ..FramingOptions::default()
            },
        )
        .unwrap();
        let mut records = 0;
        let outcome = loop {
            match framer.next_record() {
                Ok(Some(_)) => records += 1,
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        (records, outcome, framer.records_skipped())
    };
    let (records, error, skipped) = frame(2);
    assert_eq!((records, skipped), (3, 4));
    assert!(error.is_none());
    let (records, error, _) = frame(1);
    assert_eq!(records, 1);
    assert_eq!(error.unwrap().offset(), Some(good.len() as u64 * 2));

    // A bad length CRC is fatal whatever the limit.
    let mut bad_header = good.clone();
    bad_header[9] ^= 1;
    let (_, error) = frame_all(
        Input::from_bytes(bad_header, "memory"),
        Format::TfRecord,
        FramingOptions {
            multipart: Multipart::Dmlc,
            max_corrupted_records_to_skip: u64::MAX,
            ..FramingOptions::default()
        },
    );
    assert!(error.unwrap().to_string().contains("length CRC mismatch"));
}

#[test]
fn textline_rules() {
    let (lines, error) = frame_bytes(Format::TextLine, b"a\r\n\nb\n\nc");
    assert!(error.is_none());
    assert_eq!(
        lines,
        vec![
            b"a\r".to_vec(),
            vec![],
            b"b".to_vec(),
            vec![],
            b"c".to_vec()
        ]
    );
    assert_eq!(frame_bytes(Format::TextLine, b"x\n").0, vec![b"x".to_vec()]);
    assert_eq!(
        frame_bytes(Format::TextLine, b"\n").0,
        vec![Vec::<u8>::new()]
    );
    assert!(frame_bytes(Format::TextLine, b"").0.is_empty());
    // A line far longer than the buffer.
    let long = vec![b'x'; 100_000];
    let data = [&long[..], b"\ny"].concat();
    assert_eq!(
        frame_chunked(Format::TextLine, &data, vec![777], 10).0,
        vec![long, b"y".to_vec()]
    );
}

#[test]
fn offsets_point_at_each_record() {
    for format in FORMATS {
        let records = vec![b"one".to_vec(), b"".to_vec(), b"three".to_vec()];
        let data = encode(format, &records);
        let mut framer = pipemode_core::framing::Framer::new(
            Input::from_bytes(data.clone(), "memory"),
            format,
            FramingOptions::default(),
        )
        .unwrap();
        let mut expected = 0u64;
        for record in &records {
            let got = framer.next_record().unwrap().unwrap();
            assert_eq!(got.offset, expected, "{format:?}");
            expected += encode(format, std::slice::from_ref(record)).len() as u64;
        }
        assert_eq!(framer.position(), data.len() as u64);
    }
}

#[test]
fn a_record_longer_than_the_cap_is_an_error_at_its_offset() {
    let cap = 100;
    let options = FramingOptions {
        max_record_bytes: cap,
        ..FramingOptions::default()
    };
    let magic = RECORDIO_MAGIC.to_le_bytes().to_vec();
    // Parts of 40 bytes, 128 joined: only the join is over the cap.
    let multipart = [
        b"x".repeat(40),
        magic.clone(),
        b"y".repeat(40),
        magic,
        b"z".repeat(40),
    ];
    let cases = [
        (Format::TextLine, b"b".repeat(cap + 1), 21),
        (Format::TfRecord, b"b".repeat(cap + 1), 36),
        (Format::RecordIo, b"b".repeat(cap + 1), 28),
        (Format::RecordIo, multipart.concat(), 28),
    ];
    for (format, long, long_at) in cases {
        let fits = vec![b'a'; 20];
        let data = encode(format, &[fits.clone(), b"c".repeat(cap), long]);
        let input = Input::from_read(Box::new(Chunked::new(data, vec![7])), "fifo", 16);
        let (records, error) = frame_all(input, format, options);
        assert_eq!(records, [fits, b"c".repeat(cap)], "{format:?}");
        match error {
            Some(Error::Corrupt {
                offset, message, ..
            }) => {
                let cap_at = long_at + cap as u64 + format_overhead(format);
                assert_eq!(offset, cap_at, "{format:?}: {message}");
                assert!(message.contains("100-byte limit"), "{message}");
            }
            other => panic!("{format:?}: expected a Corrupt error, got {other:?}"),
        }
    }
}

#[test]
fn both_multipart_modes_count_every_magic_word_against_the_cap() {
    // Three parts of 30 bytes: 98 bytes joined dmlc's way, two magic words included. Concat
    // once counted only the last part's magic word (94 bytes) and let it through.
    let part = |cflag: u32, byte: u8| {
        let mut framed = RECORDIO_MAGIC.to_le_bytes().to_vec();
        framed.extend_from_slice(&(30 | cflag << 29).to_le_bytes());
        framed.extend_from_slice(&[byte; 30]);
        framed.extend_from_slice(&[0; 2]); // padding to 4 bytes
        framed
    };
    let data = [part(1, b'x'), part(2, b'y'), part(3, b'z')].concat();
    for multipart in [Multipart::Dmlc, Multipart::Concat] {
        let options = FramingOptions {
            max_record_bytes: 96,
            multipart,
            ..FramingOptions::default()
        };
        let input = Input::from_read(Box::new(Chunked::new(data.clone(), vec![7])), "fifo", 16);
        let (records, error) = frame_all(input, Format::RecordIo, options);
        assert!(records.is_empty(), "{multipart:?}");
        match error {
            Some(Error::Corrupt { message, .. }) => {
                assert!(
                    message.contains("96-byte limit"),
                    "{multipart:?}: {message}"
                )
            }
            other => panic!("{multipart:?}: expected a Corrupt error, got {other:?}"),
        }
    }
}

/// Framing bytes around a record of `cap` bytes (a multiple of 4): where the next one starts.
fn format_overhead(format: Format) -> u64 {
    match format {
        Format::TextLine => 1,
        Format::TfRecord => 16,
        Format::RecordIo => 8,
    }
}

/// Hands out `data`, then fails as a disk would.
struct FailingAfter(Vec<u8>);

impl std::io::Read for FailingAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0.is_empty() {
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

#[test]
fn a_read_failing_mid_stream_names_the_offset() {
    let data = encode(Format::TfRecord, &[b"ok".to_vec()]);
    let good = data.len() as u64;
    let mut stream = data.clone();
    stream.extend_from_slice(&data[..5]); // part of a second record, then the failure
    let input = Input::from_read(Box::new(FailingAfter(stream)), "disk", 64);
    let (records, error) = frame_all(input, Format::TfRecord, FramingOptions::default());
    assert_eq!(records, [b"ok".to_vec()]);
    let error = error.expect("the read fails");
    assert_eq!(error.offset(), Some(good + 5));
    assert!(
        error
            .to_string()
            .ends_with(&format!("at byte offset {}", good + 5)),
        "{error}"
    );
}

#[test]
fn a_stream_in_the_other_framing_says_which_format_to_pass() {
    let records = [b"first".to_vec(), b"second".to_vec()];
    let cases = [
        (Format::TfRecord, Format::RecordIo, "bad magic"),
        (Format::RecordIo, Format::TfRecord, "length CRC mismatch"),
    ];
    for (written_as, read_as, problem) in cases {
        let data = encode(written_as, &records);
        for sizes in [vec![data.len()], vec![1]] {
            let (read, error) = frame_chunked(read_as, &data, sizes, 16);
            assert!(read.is_empty());
            let message = error.expect("a mix-up fails").to_string();
            let hint = format!(
                "; this looks like {0} data: pass record_format=\"{0}\"",
                written_as.name()
            );
            assert!(
                message.contains(&format!(" at byte offset 0: {problem}")),
                "{message}"
            );
            assert!(message.ends_with(&hint), "{message}");
        }
    }
    // One empty RecordIO record is 8 bytes, shorter than a TFRecord header.
    let data = encode(Format::RecordIo, &[Vec::new()]);
    let message = frame_bytes(Format::TfRecord, &data).1.unwrap().to_string();
    assert!(
        message.ends_with(
            "truncated header: 8 of 12 bytes before the end; this looks like RecordIO data: pass \
             record_format=\"RecordIO\""
        ),
        "{message}"
    );
}

#[test]
fn the_format_hint_is_only_for_the_start_of_the_stream_and_only_when_it_fits() {
    let tfrecord = encode(Format::TfRecord, &[b"x".to_vec()]);
    let recordio = encode(Format::RecordIo, &[b"x".to_vec()]);
    // A good first record, then a record of the other framing: corruption, not a mix-up.
    for (read_as, stream) in [
        (Format::RecordIo, [&recordio[..], &tfrecord].concat()),
        (Format::TfRecord, [&tfrecord[..], &recordio].concat()),
    ] {
        let (read, error) = frame_bytes(read_as, &stream);
        assert_eq!(read, [b"x".to_vec()]);
        let message = error.unwrap().to_string();
        assert!(!message.contains("looks like"), "{message}");
    }
    // Garbage from the start in either framing: no hint.
    for read_as in [Format::RecordIo, Format::TfRecord] {
        let message = frame_bytes(read_as, b"garbage, not records\n")
            .1
            .unwrap()
            .to_string();
        assert!(!message.contains("looks like"), "{message}");
    }
}

/// The largest single allocation the current thread asked for, so a test can bound the read
/// buffer without reaching into the framer. Thread-local: other tests run on other threads.
struct LargestAllocation;

thread_local! {
    static LARGEST: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn note_allocation(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl std::alloc::GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note_allocation(layout.size());
        std::alloc::System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note_allocation(layout.size());
        std::alloc::System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        note_allocation(size);
        std::alloc::System.realloc(ptr, layout, size)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Frames `data` from a stream in 4 KiB reads through a 1 KiB buffer under `cap`, and returns
/// what was framed with the largest allocation made meanwhile.
fn frame_under_cap(
    format: Format,
    data: Vec<u8>,
    cap: usize,
) -> (Vec<Vec<u8>>, Option<Error>, usize) {
    let options = FramingOptions {
        max_record_bytes: cap,
        ..FramingOptions::default()
    };
    let input = Input::from_read(Box::new(Chunked::new(data, vec![4096])), "fifo", 1024);
    LARGEST.with(|largest| largest.set(0));
    let (records, error) = frame_all(input, format, options);
    (records, error, LARGEST.with(std::cell::Cell::get))
}

#[test]
fn the_read_buffer_never_outgrows_the_record_cap() {
    let cap = 100_000;
    for format in FORMATS {
        // A record of exactly the cap fits, and takes no more than itself and its framing.
        let data = encode(format, &[b"a".repeat(cap), b"b".to_vec()]);
        let (records, error, largest) = frame_under_cap(format, data, cap);
        assert!(error.is_none(), "{format:?}: {error:?}");
        assert_eq!(records, [b"a".repeat(cap), b"b".to_vec()], "{format:?}");
        // The most a framer may ask for at once: the record, its framing, RecordIO's padding.
        let framed =
            cap + format_overhead(format) as usize + 3 * usize::from(format == Format::RecordIo);
        assert!(
            largest <= framed,
            "{format:?}: {largest} bytes for {framed}"
        );

        // A record ten times the cap fails at its offset before the buffer outgrows the cap.
        let data = encode(format, &[b"c".repeat(10 * cap)]);
        let (records, error, largest) = frame_under_cap(format, data, cap);
        assert!(records.is_empty(), "{format:?}");
        let error = error.expect("a record over the cap fails");
        assert_eq!(error.offset(), Some(0), "{format:?}");
        assert!(error.to_string().contains("100000-byte limit"), "{error}");
        assert!(
            largest <= framed,
            "{format:?}: {largest} bytes for {framed}"
        );
    }
    // The same for a TextLine stream without any newline, as in the report: a 2.2 GB line grew
    // the buffer to 4 GiB under the 2 GiB cap before it failed.
    let (_, error, largest) = frame_under_cap(Format::TextLine, b"d".repeat(10 * cap), cap);
    assert!(error.unwrap().to_string().contains("a line longer than"));
    assert!(largest <= cap + 1, "{largest} bytes for a {cap}-byte cap");
}

/// Set in the child process of the test below, which runs the test again under a limit.
const ADDRESS_SPACE_CHILD: &str = "PIPEMODE_TEST_ADDRESS_SPACE_CHILD";

/// This process's virtual size in bytes, from /proc/self/status.
fn virtual_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kb: u64 = line[7..].trim().trim_end_matches(" kB").parse().unwrap();
    kb * 1024
}

/// The report's failure, scaled down: under an address-space limit that leaves room for the
/// cap but not for twice it, a line longer than the cap is an error, not an abort in the
/// allocator. Runs in a child process, so an abort fails the test instead of the test binary.
#[test]
fn a_line_over_the_cap_fails_cleanly_under_an_address_space_limit() {
    const MIB: usize = 1 << 20;
    let cap = 64 * MIB;
    if std::env::var_os(ADDRESS_SPACE_CHILD).is_some() {
        let room = virtual_size() + (cap + cap / 2) as u64 + 16 * MIB as u64;
        let limit = libc::rlimit {
            rlim_cur: room,
            rlim_max: room,
        };
        // SAFETY: setrlimit reads one rlimit struct we own.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
        let endless_line = std::io::Read::take(std::io::repeat(b'x'), 3 * cap as u64);
        let options = FramingOptions {
            max_record_bytes: cap,
            ..FramingOptions::default()
        };
        let input = Input::from_read(Box::new(endless_line), "fifo", MIB);
        let (_, error) = frame_all(input, Format::TextLine, options);
        println!("child: {}", error.expect("the line is over the cap"));
        return;
    }
    let test = "a_line_over_the_cap_fails_cleanly_under_an_address_space_limit";
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ADDRESS_SPACE_CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(
        child.status.success(),
        "{:?}\n{stdout}\n{stderr}",
        child.status
    );
    assert!(
        stdout
            .contains("child: fifo: corrupt TextLine stream at byte offset 0: a line longer than"),
        "{stdout}"
    );
}
