"""Property tests of the three framings end to end: RecordWriter -> FIFO -> RecordReader.

Arbitrary records round-trip record by record and in batches; every cut point of a small stream
and arbitrarily mutated streams give records or a PipeModeError, never a crash, a hang or a
record the stream does not hold: for TFRecord, whose CRCs check the data, no record that was never
written; for RecordIO (no checksum) and TextLine, exactly the records the mutated bytes frame.
"""

from __future__ import annotations

import itertools
import os
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pipemode import CorruptRecordError, PipeModeError, RecordReader, RecordWriter

FORMATS = ["RecordIO", "TFRecord", "TextLine"]
MAGIC_WORD = 0xCED7230A
MAGIC = MAGIC_WORD.to_bytes(4, "little")

# Records rich in what breaks framings: RecordIO's magic word (aligned or not), newlines,
# carriage returns, empty records.
record_bytes = st.lists(
    st.one_of(st.binary(max_size=40), st.just(MAGIC), st.just(b"\n"), st.just(b"\r")),
    max_size=6,
).map(b"".join) | st.binary(min_size=1000, max_size=70_000)


def records_for(record_format: str) -> st.SearchStrategy[list[bytes]]:
    record = record_bytes
    if record_format == "TextLine":
        record = record.map(lambda r: r.replace(b"\n", b""))
    return st.lists(record, max_size=30)


def encode(records: list[bytes], record_format: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data"
        with RecordWriter(path, record_format) as writer:
            for record in records:
                writer.write(record)
        return path.read_bytes()


def write_through_fifo(records: list[bytes], record_format: str, folder: str) -> Path:
    """Returns a FIFO that a RecordWriter in another thread is writing `records` into."""
    path = Path(folder) / "channel_0"
    os.mkfifo(path)

    def produce() -> None:
        try:
            with RecordWriter(path, record_format) as writer:
                for record in records:
                    writer.write(record)
        except BrokenPipeError:
            pass  # the reader stopped early; the test's assertion says why

    threading.Thread(target=produce, daemon=True).start()
    return path


hypothesis_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("record_format", FORMATS)
def test_round_trip_through_a_fifo_record_by_record(record_format):
    @hypothesis_settings
    @given(records=records_for(record_format))
    def check(records: list[bytes]) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = write_through_fifo(records, record_format, folder)
            assert list(RecordReader(path, record_format, open_timeout=10)) == records

    check()


@pytest.mark.parametrize("record_format", FORMATS)
def test_round_trip_through_a_fifo_in_batches(record_format):
    @hypothesis_settings
    @given(records=records_for(record_format), batch_size=st.integers(1, 8))
    def check(records: list[bytes], batch_size: int) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = write_through_fifo(records, record_format, folder)
            reader = RecordReader(path, record_format, open_timeout=10, buffer_size=1)
            batches = list(reader.batches(batch_size))
            assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
            assert [r for b in batches for r in b] == records
            for batch in batches:
                assert batch.to_bytes() == b"".join(batch)
                assert batch.offsets[-1] == batch.nbytes

    check()


def small_stream(record_format: str) -> tuple[list[bytes], list[int]]:
    """A few records of each kind, and the stream offsets where records end."""
    records = [b"", b"abc", b"x" * 13, MAGIC * 2 + b"tail", b"\r"]
    if record_format == "TextLine":
        records = [r for r in records if b"\n" not in r]
    ends = [0]
    for record in records:
        ends.append(ends[-1] + len(encode([record], record_format)))
    return records, ends


@pytest.mark.parametrize("record_format", ["RecordIO", "TFRecord"])
def test_every_cut_point_gives_a_prefix_then_an_error(fifo, record_format):
    records, ends = small_stream(record_format)
    data = encode(records, record_format)
    assert ends[-1] == len(data)
    for cut in range(len(data) + 1):
        reader = RecordReader(fifo(data[:cut], name=f"cut_{cut}"), record_format)
        read: list[bytes] = []
        try:
            read.extend(reader)
        except CorruptRecordError as error:
            assert cut not in ends, f"cut {cut} is a record boundary: {error}"
            assert error.offset == ends[len(read)]
            assert error.path == str(reader.path)
        else:
            assert cut in ends, f"a stream cut inside a record at {cut} ended cleanly"
        assert read == records[: len(read)]
        assert len(read) == max(i for i, end in enumerate(ends) if end <= cut)


def test_every_cut_point_of_textline_splits_like_text(fifo):
    data = b"one\r\n\ntwo\nthree"
    for cut in range(len(data) + 1):
        expected = data[:cut].split(b"\n")
        if expected[-1] == b"":
            expected.pop()
        assert list(RecordReader(fifo(data[:cut], name=f"cut_{cut}"), "TextLine")) == expected


mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 30)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=30)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.none()),
)


def mutate(data: bytes, mutations: list[tuple[str, float, object]]) -> bytes:
    out = bytearray(data)
    for kind, where, arg in mutations:
        at = int(where * len(out))
        if kind == "flip" and at < len(out):
            out[at] ^= int(arg)  # type: ignore[call-overload]
        elif kind == "delete":
            del out[at : at + int(arg)]  # type: ignore[call-overload]
        elif kind == "insert":
            out[at:at] = arg  # type: ignore[assignment]
        elif kind == "truncate":
            del out[at:]
    return bytes(out)


def frame_recordio(data: bytes, multipart: str) -> tuple[list[bytes], bool]:
    """The records a RecordIO stream holds by the dmlc rules, and whether it ends in an error.

    An oracle for streams that RecordIO has no checksum to protect: a reader must yield exactly
    these records, and an error exactly when this says so.
    """
    records: list[bytes] = []
    parts: list[bytes] | None = None  # the parts of a multipart record read so far
    at = 0
    while at < len(data):
        if len(data) - at < 8:
            return records, True
        magic, lrecord = struct.unpack_from("<II", data, at)
        length, cflag = lrecord & ((1 << 29) - 1), lrecord >> 29
        end = at + 8 + -(-length // 4) * 4  # padded to 4 bytes
        if magic != MAGIC_WORD or end > len(data):
            return records, True
        payload = data[at + 8 : at + 8 + length]
        at = end
        if cflag == 0 and parts is None:
            records.append(payload)
        elif cflag == 1 and parts is None:
            parts = [payload]
        elif cflag in (2, 3) and parts is not None:
            parts.append(payload)
            if cflag == 3:
                records.append((MAGIC if multipart == "dmlc" else b"").join(parts))
                parts = None
        else:
            return records, True
    return records, parts is not None


def frame_textline(data: bytes) -> list[bytes]:
    return data.removesuffix(b"\n").split(b"\n") if data else []


@pytest.mark.parametrize(
    ("record_format", "multipart"),
    [("RecordIO", "dmlc"), ("RecordIO", "concat"), ("TFRecord", "dmlc"), ("TextLine", "dmlc")],
)
def test_mutated_streams_give_records_or_a_pipemode_error(tmp_path, record_format, multipart):
    @settings(max_examples=150, deadline=None)
    @given(records=records_for(record_format), mutations=st.lists(mutation, min_size=1, max_size=3))
    def check(records: list[bytes], mutations: list[tuple[str, float, object]]) -> None:
        data = mutate(encode(records, record_format), mutations)
        path = tmp_path / "mutated"
        path.write_bytes(data)
        read: list[bytes] = []
        failed = False
        try:
            read.extend(RecordReader(path, record_format, multipart=multipart))
        except PipeModeError as error:
            assert str(path) in str(error)
            failed = True
        if record_format == "TFRecord":
            # CRCs make a record that was never written practically impossible.
            assert all(record in records for record in read)
        elif record_format == "RecordIO":
            # No checksum: a record is exactly what the mutated framing holds, never more.
            assert (read, failed) == frame_recordio(data, multipart)
        else:
            assert (read, failed) == (frame_textline(data), False)

    check()


def part_headers(data: bytes) -> list[int]:
    """The offsets of the part headers of a well-formed RecordIO stream."""
    offsets, at = [], 0
    while at < len(data):
        offsets.append(at)
        length = struct.unpack_from("<I", data, at + 4)[0] & ((1 << 29) - 1)
        at += 8 + -(-length // 4) * 4
    return offsets


# Small records, often holding the magic word, so that streams have multipart records.
small_records = st.lists(
    st.lists(st.one_of(st.binary(max_size=12), st.just(MAGIC)), max_size=4).map(b"".join),
    min_size=1,
    max_size=8,
)
# (which part header, its new continuation flag, its new length or None to keep it)
header_rewrite = st.tuples(st.integers(0, 1000), st.integers(0, 7), st.none() | st.integers(0, 40))


@pytest.mark.parametrize("multipart", ["dmlc", "concat"])
def test_recordio_with_rewritten_headers_gives_what_they_frame(tmp_path, multipart):
    """Random mutations seldom hit a header; these rewrite continuation flags and lengths."""

    @settings(max_examples=150, deadline=None)
    @given(records=small_records, rewrites=st.lists(header_rewrite, min_size=1, max_size=3))
    def check(records: list[bytes], rewrites: list[tuple[int, int, int | None]]) -> None:
        data = bytearray(encode(records, "RecordIO"))
        headers = part_headers(data)
        for which, cflag, length in rewrites:
            at = headers[which % len(headers)] + 4
            old_length = struct.unpack_from("<I", data, at)[0] & ((1 << 29) - 1)
            struct.pack_into(
                "<I", data, at, cflag << 29 | (old_length if length is None else length)
            )
        path = tmp_path / "rewritten"
        path.write_bytes(data)
        read: list[bytes] = []
        failed = False
        try:
            read.extend(RecordReader(path, "RecordIO", multipart=multipart))
        except PipeModeError:
            failed = True
        assert (read, failed) == frame_recordio(bytes(data), multipart)

    check()


@given(data=st.binary(max_size=3000), record_format=st.sampled_from(FORMATS))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_give_records_or_a_pipemode_error(data, record_format):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "junk"
        path.write_bytes(data)
        try:
            for record in RecordReader(path, record_format):
                assert isinstance(record, bytes)
        except PipeModeError:
            pass


def test_recordio_escaped_magic_round_trips_and_concat_mode_drops_it(tmp_path):
    records = [MAGIC, MAGIC * 3, b"ab" + MAGIC + b"cd", b"abcd" + MAGIC + b"efgh", b"x" + MAGIC]
    path = tmp_path / "data"
    with RecordWriter(path, "RecordIO") as writer:
        for record in records:
            writer.write(record)
    assert list(RecordReader(path)) == records
    # The incumbent joined parts without the magic word the writer split on.
    concat = [r[:4] + r[8:] if r.startswith(b"abcd" + MAGIC) else r for r in records]
    concat[0:2] = [b"", b""]
    assert list(RecordReader(path, multipart="concat")) == concat


def test_concurrent_readers_in_threads(fifo, tmp_path):
    """Readers in threads do not disturb each other's streams."""
    streams = {f"channel_{i}": [os.urandom(i * 100 + n) for n in range(300)] for i in range(4)}
    results: dict[str, list[bytes]] = {}

    def read(name: str, path: Path) -> None:
        results[name] = list(RecordReader(path, "TFRecord"))

    threads = [
        threading.Thread(target=read, args=(name, fifo(encode(records, "TFRecord"), name)))
        for name, records in streams.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == streams


# Opens the FIFO, says so, and writes only once told to (or after HOLD_BACK seconds, so that a
# reader holding the GIL cannot hang the test).
HELD_BACK_WRITER = """
import os, select, sys
fd = os.open(sys.argv[1], os.O_WRONLY)  # returns once a reader has opened the FIFO
print("opened", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[3]))
os.write(fd, bytes.fromhex(sys.argv[2]))
"""
HOLD_BACK = 3.0


def test_two_threads_wait_inside_reads_at_the_same_time(tmp_path):
    """The GIL is released while a read waits: two threads are inside one at once.

    A reader opens its FIFO only when a thread first asks it for a record, and the writers
    send nothing until both FIFOs are open. So both FIFOs open while neither read has returned
    means both threads were inside a read together; serialised reads open the second FIFO only
    after the first read has returned.
    """
    data = encode([b"record"], "TFRecord")
    readers, writers, threads = [], [], []
    returned = [threading.Event(), threading.Event()]
    results: list[list[bytes]] = [[], []]
    try:
        for i in range(2):
            path = tmp_path / f"channel_{i}"
            os.mkfifo(path)
            args = [str(path), data.hex(), str(HOLD_BACK)]
            command = [sys.executable, "-c", HELD_BACK_WRITER, *args]
            writers.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            readers.append(RecordReader(path, "TFRecord", open_timeout=10))

        def read(i: int) -> None:
            results[i].extend(itertools.islice(readers[i], 1))
            returned[i].set()

        threads = [threading.Thread(target=read, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 2 * HOLD_BACK + 5
        for writer in writers:
            ready, _, _ = select.select([writer.stdout], [], [], deadline - time.monotonic())
            assert ready and writer.stdout.readline() == b"opened\n"
        assert not any(event.is_set() for event in returned), "a read returned before both began"
        for writer in writers:
            writer.stdin.close()  # go
        for thread in threads:
            thread.join(timeout=10)
        assert results == [[b"record"], [b"record"]]
    finally:
        for reader in readers:
            reader.close()
        for thread in threads:
            thread.join(timeout=10)
        for writer in writers:
            writer.kill()
            writer.wait(timeout=10)
            writer.stdin.close()
            writer.stdout.close()


@pytest.mark.parametrize(
    ("written_as", "read_as"), [("TFRecord", "RecordIO"), ("RecordIO", "TFRecord")]
)
def test_a_format_mix_up_names_the_format_to_pass(fifo, tmp_path, written_as, read_as):
    data = encode([b"first", b"second"], written_as)
    file = tmp_path / "data"
    file.write_bytes(data)
    for path in [file, fifo(data)]:
        with pytest.raises(CorruptRecordError) as caught:
            list(RecordReader(path, read_as))
        assert caught.value.offset == 0
        assert caught.value.path == str(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: corrupt {read_as} stream at byte offset 0: ")
        assert message.endswith(
            f'; this looks like {written_as} data: pass record_format="{written_as}"'
        )


def test_a_format_hint_is_not_given_past_the_first_record(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(encode([b"first"], "RecordIO") + encode([b"second"], "TFRecord"))
    reader = RecordReader(path, "RecordIO")
    with pytest.raises(CorruptRecordError, match="bad magic") as caught:
        list(reader)
    assert caught.value.offset == len(encode([b"first"], "RecordIO"))
    assert "looks like" not in str(caught.value)
