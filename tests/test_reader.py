"""RecordReader and RecordWriter on real FIFOs fed by a `cat` process, and on regular files."""

from __future__ import annotations

import errno
import importlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pipemode
import pytest
from pipemode import (
    CorruptRecordError,
    PipeModeDatasetException,
    PipeModeError,
    PipeTimeoutError,
    RecordBatch,
    RecordReader,
    RecordWriter,
)

FORMATS = ["RecordIO", "TFRecord", "TextLine"]
MAGIC = (0xCED7230A).to_bytes(4, "little")


def sample_records(record_format: str) -> list[bytes]:
    records = [b"", b"a", b"hello world", b"\r\r", bytes(range(256)) * 40, b"z" * 300_000]
    if record_format == "TextLine":
        return [r.replace(b"\n", b"") for r in records]
    return [*records, MAGIC, b"abcd" + MAGIC + b"efgh" + MAGIC, b"\n\n"]


def encode(records: list[bytes], record_format: str, path: Path) -> Path:
    with RecordWriter(path, record_format) as writer:
        for record in records:
            writer.write(record)
    return path


@pytest.mark.parametrize("record_format", FORMATS)
def test_fifo_round_trip_record_by_record(fifo, tmp_path, record_format):
    records = sample_records(record_format)
    source = encode(records, record_format, tmp_path / "source")
    assert list(RecordReader(fifo(source), record_format)) == records


@pytest.mark.parametrize("record_format", FORMATS)
def test_fifo_round_trip_in_batches(fifo, tmp_path, record_format):
    records = sample_records(record_format)
    source = encode(records, record_format, tmp_path / "source")
    with RecordReader(fifo(source), record_format) as reader:
        batches = list(reader.batches(3))
    assert all(isinstance(b, RecordBatch) for b in batches)
    assert [len(b) for b in batches[:-1]] == [3] * (len(batches) - 1)
    assert [record for batch in batches for record in batch] == records
    assert reader.records_read == len(records)
    assert reader.bytes_read == source.stat().st_size


def test_a_batch_ends_once_it_holds_max_batch_bytes(fifo, tmp_path):
    records = [bytes([i]) * 1000 for i in range(10)]
    source = encode(records, "TFRecord", tmp_path / "source")
    with RecordReader(fifo(source), "TFRecord", max_batch_bytes=2500) as reader:
        batches = list(reader.batches(8))
    assert [len(batch) for batch in batches] == [3, 3, 3, 1]
    assert [record for batch in batches for record in batch] == records


@pytest.mark.parametrize("record_format", FORMATS)
def test_regular_file_round_trip(tmp_path, record_format):
    records = sample_records(record_format)
    path = encode(records, record_format, tmp_path / "data")
    assert list(RecordReader(path, record_format)) == records
    assert list(RecordReader(str(path), record_format)) == records


def test_empty_file_and_empty_fifo_have_no_records(fifo, tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(RecordReader(empty)) == []
    assert list(RecordReader(fifo(b""))) == []


def test_record_batch_views(tmp_path):
    records = [b"ab", b"", b"cde", b"f"]
    path = encode(records, "TFRecord", tmp_path / "data")
    (batch,) = RecordReader(path, "TFRecord").batches(10)
    assert len(batch) == 4
    assert batch[0] == b"ab" and batch[-1] == b"f" and batch[-4] == b"ab"
    with pytest.raises(IndexError):
        batch[4]
    with pytest.raises(IndexError):
        batch[-5]
    assert list(batch) == records == batch.to_list()
    array = batch.to_array()
    assert array.dtype == object and array.shape == (4,) and list(array) == records
    assert batch.to_bytes() == b"abcdef" == bytes(memoryview(batch))
    assert batch.nbytes == 6
    assert memoryview(batch).readonly
    assert np.frombuffer(batch, dtype=np.uint8).tobytes() == b"abcdef"
    offsets = batch.offsets
    assert offsets.dtype == np.int64
    assert offsets.tolist() == [0, 2, 2, 5, 6]


def test_iteration_after_the_end_and_after_close_gives_nothing(tmp_path):
    path = encode([b"x", b"y"], "RecordIO", tmp_path / "data")
    reader = RecordReader(path)
    assert list(reader) == [b"x", b"y"]
    assert list(reader) == []
    reader = RecordReader(path)
    reader.close()
    assert list(reader) == []


def test_asking_a_closed_reader_for_other_batches_says_it_is_closed(tmp_path):
    path = encode([b"x"] * 10, "RecordIO", tmp_path / "data")
    read_then_closed = RecordReader(path, batch_size=4)
    assert len(next(read_then_closed.batches())) == 4
    read_then_closed.close()
    closed_unread = RecordReader(path, batch_size=4)
    closed_unread.close()
    for reader in (read_then_closed, closed_unread):
        with pytest.raises(ValueError, match=r"data: the reader is closed$"):
            next(reader.batches(5))


def has_a_reader(fifo: Path) -> bool:
    """True when some process holds the FIFO's read end open.

    A non-blocking open of the write end fails with ENXIO exactly when no reader has it open.
    """
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ENXIO:
            return False
        raise
    os.close(fd)
    return True


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_creating_a_reader_opens_nothing(tmp_path):
    path = tmp_path / "channel_0"
    os.mkfifo(path)
    reader = RecordReader(path, open_timeout=10)  # no writer: would block if it opened the FIFO
    time.sleep(0.2)  # time enough for a reader thread, had one started, to open it
    assert not has_a_reader(path)
    # The probe sees a reader: the first read opens the FIFO (and the probe, a writer that
    # comes and goes, ends its stream).
    first_read = threading.Thread(target=lambda: list(reader))
    first_read.start()
    try:
        assert wait_until(lambda: has_a_reader(path))
    finally:
        reader.close()
        first_read.join(timeout=10)
    assert not first_read.is_alive()


def test_a_reader_claims_its_fifo_on_first_read_only(fifo, tmp_path):
    path = fifo(encode([b"r1", b"r2"], "RecordIO", tmp_path / "source"))
    reader = RecordReader(path)
    time.sleep(0.2)
    # The writer is still blocked in open(): nobody has opened the read end.
    assert all(w.poll() is None for w, _ in fifo.writers)
    assert not has_a_reader(path)
    assert list(reader) == [b"r1", b"r2"]


def test_waits_for_a_fifo_that_appears_later(tmp_path):
    path = tmp_path / "train_1"
    source = encode([b"late"] * 3, "TFRecord", tmp_path / "source")

    def create_and_feed() -> None:
        time.sleep(0.3)
        os.mkfifo(path)
        subprocess.run(["sh", "-c", 'exec cat "$0" > "$1"', str(source), str(path)], check=True)

    feeder = threading.Thread(target=create_and_feed)
    feeder.start()
    try:
        assert list(RecordReader(path, "TFRecord", open_timeout=10)) == [b"late"] * 3
    finally:
        feeder.join()


def test_missing_path_times_out(tmp_path):
    start = time.monotonic()
    with pytest.raises(PipeTimeoutError) as raised:
        list(RecordReader(tmp_path / "never", open_timeout=0.3, name="channel 'train'"))
    assert 0.25 < time.monotonic() - start < 5
    assert raised.value.path == f"channel 'train' {tmp_path / 'never'}"
    assert "channel 'train'" in str(raised.value) and "timed out" in str(raised.value)


def test_fifo_without_writer_times_out(tmp_path):
    path = tmp_path / "channel_0"
    os.mkfifo(path)
    start = time.monotonic()
    with pytest.raises(PipeTimeoutError, match="writer"):
        list(RecordReader(path, open_timeout=0.3))
    assert time.monotonic() - start < 5


def test_close_stops_a_reader_waiting_for_a_writer(tmp_path):
    path = tmp_path / "channel_0"
    os.mkfifo(path)
    reader = RecordReader(path, open_timeout=None)
    results: list[object] = []
    consumer = threading.Thread(target=lambda: results.append(reader._native.next_batch()))
    consumer.start()
    time.sleep(0.2)
    start = time.monotonic()
    reader.close()
    consumer.join(timeout=5)
    assert not consumer.is_alive()
    assert time.monotonic() - start < 2
    assert results == [None]


@pytest.fixture
def endless_fifo(tmp_path):
    """A FIFO that `yes` writes to without end: (its path, the writer process)."""
    path = tmp_path / "channel_0"
    os.mkfifo(path)
    writer = subprocess.Popen(["sh", "-c", 'exec yes > "$0"', str(path)])
    yield path, writer
    if writer.poll() is None:
        writer.kill()
        writer.wait()


def test_closing_early_gives_the_writer_epipe(endless_fifo):
    path, writer = endless_fifo
    reader = RecordReader(path, "TextLine")
    assert next(iter(reader)) == b"y"
    reader.close()
    assert writer.wait(timeout=10) != 0  # killed by SIGPIPE: the reader end is closed


def test_close_from_another_thread_while_iterating(endless_fifo):
    path, writer = endless_fifo
    reader = RecordReader(path, "TextLine")
    threading.Timer(0.2, reader.close).start()
    assert set(reader) == {b"y"}  # ends, without an error, once closed
    assert writer.wait(timeout=10) != 0


def test_corrupt_stream_names_path_and_offset(tmp_path):
    data = bytearray((encode([b"good", b"bad!"], "TFRecord", tmp_path / "data")).read_bytes())
    data[-5] ^= 0xFF  # the second record's data
    path = tmp_path / "corrupt"
    path.write_bytes(bytes(data))
    reader = RecordReader(path, "TFRecord", name="channel 'eval'")
    records = []
    with pytest.raises(CorruptRecordError) as raised:
        for record in reader:
            records.append(record)
    assert records == [b"good"]
    assert list(reader) == []  # the error ended the stream; it is not raised again
    assert raised.value.offset == 20
    assert raised.value.path == f"channel 'eval' {path}"
    assert "byte offset 20" in str(raised.value) and str(path) in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_skipping_corrupt_tfrecords_warns_with_the_count(tmp_path, caplog):
    good = encode([b"r0"], "TFRecord", tmp_path / "one").read_bytes()
    bad = bytearray(good)
    bad[-1] ^= 1
    path = tmp_path / "data"
    path.write_bytes(good + bytes(bad) * 2 + good + bytes(bad) * 2 + good)
    with caplog.at_level(logging.WARNING, logger="pipemode"):
        reader = RecordReader(path, "TFRecord", max_corrupted_records_to_skip=2)
        assert list(reader) == [b"r0"] * 3
    assert reader.records_skipped == 4
    assert "skipped 4" in caplog.text
    with pytest.raises(CorruptRecordError, match="in a row"):
        list(RecordReader(path, "TFRecord", max_corrupted_records_to_skip=1))


def test_os_errors_keep_their_class_and_name_the_path(tmp_path):
    # A path that does not exist is no OS error: it may be a FIFO that SageMaker has not made
    # yet, so it is waited for (test_missing_path_times_out).
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "file").write_bytes(b"")
    for path, error_class in [
        (folder, IsADirectoryError),
        (tmp_path / "file" / "data", NotADirectoryError),
    ]:
        with pytest.raises(error_class) as raised:
            list(RecordReader(path, open_timeout=5))
        assert raised.value.filename == str(path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"record_format": "CSV"}, "Invalid record format"),
        ({"record_format": "RecordIO", "max_corrupted_records_to_skip": 1}, "only to TFRecord"),
        ({"multipart": "glue"}, "multipart"),
        ({"open_timeout": -1.0}, "open_timeout"),
        ({"batch_size": 0}, "batch_size"),
        ({"prefetch": 0}, "prefetch"),
        ({"max_corrupted_records_to_skip": -1, "record_format": "TFRecord"}, ">= 0"),
    ],
)
def test_bad_arguments_fail_at_construction(tmp_path, kwargs, message):
    with pytest.raises(PipeModeDatasetException, match=message):
        RecordReader(tmp_path / "x", **kwargs)


def test_writer_rejects_what_cannot_round_trip(tmp_path):
    with RecordWriter(tmp_path / "t", "TextLine") as writer, pytest.raises(PipeModeError):
        writer.write(b"two\nlines")
    with pytest.raises(PipeModeDatasetException, match="Invalid record format"):
        RecordWriter(tmp_path / "x", "Parquet")
    writer = RecordWriter(tmp_path / "closed")
    writer.close()
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"x")


def test_writer_takes_any_bytes_like(tmp_path):
    path = tmp_path / "data"
    with RecordWriter(path, "TFRecord") as writer:
        writer.write(bytearray(b"ab"))
        writer.write(memoryview(b"cd"))
        writer.write(np.frombuffer(b"ef", dtype=np.uint8))
    assert list(RecordReader(path, "TFRecord")) == [b"ab", b"cd", b"ef"]


def test_writer_to_a_fifo_feeds_a_reader_in_another_thread(tmp_path):
    path = tmp_path / "channel_0"
    os.mkfifo(path)
    records = [os.urandom(n) for n in range(0, 5000, 97)]

    def produce() -> None:
        with RecordWriter(path, "RecordIO") as writer:
            for record in records:
                writer.write(record)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert list(RecordReader(path, "RecordIO", open_timeout=10)) == records
    finally:
        producer.join()


def test_an_unclosed_writer_still_delivers_what_it_buffered(tmp_path):
    path = tmp_path / "data"
    writer = RecordWriter(path, "TFRecord")
    for record in (b"a", b"b" * 1000, b"c"):
        writer.write(record)
    del writer
    assert list(RecordReader(path, "TFRecord")) == [b"a", b"b" * 1000, b"c"]


# Run in a child so that a regression hangs the child, not the suite. Each question is timed; a
# question that waited for the blocked thread's lock would hang (it holds the GIL meanwhile).
_ASK_WHILE_ANOTHER_THREAD_WAITS = """
import os, sys, threading, time
from pipemode import RecordReader, RecordWriter

def ask(question, how):
    start = time.monotonic()
    try:
        answer = repr(how())
    except Exception as error:
        answer = type(error).__name__
    print(question, answer, f"{time.monotonic() - start:.3f}", flush=True)

folder = sys.argv[1]
# A writer whose write blocks on a FIFO nobody reads yet.
fifo = os.path.join(folder, "w")
os.mkfifo(fifo)
read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
writer = RecordWriter(fifo, "RecordIO")
blocked = threading.Thread(target=writer.write, args=(b"x" * (8 << 20),))
blocked.start()
time.sleep(0.3)
ask("writer.closed", lambda: writer.closed)
# A reader whose read waits for a FIFO writer that never comes.
silent = os.path.join(folder, "r")
os.mkfifo(silent)
reader = RecordReader(silent, "RecordIO", open_timeout=None)
waiting = threading.Thread(target=lambda: list(reader))
waiting.start()
time.sleep(0.3)
ask("reader.batches(8)", lambda: next(reader.batches(8)))
ask("reader.records_read", lambda: reader.records_read)
ask("reader.pipe_wait_seconds", lambda: reader.pipe_wait_seconds >= 0)
reader.close()
waiting.join()
os.close(read_end)  # the blocked write now fails with EPIPE
blocked.join()
print("done")
"""


def test_asking_a_reader_or_writer_does_not_wait_for_a_blocked_thread(tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", _ASK_WHILE_ANOTHER_THREAD_WAITS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert child.returncode == 0, child.stderr
    *questions, last = child.stdout.splitlines()
    assert last == "done"
    answers = {}
    for line in questions:
        question, answer, seconds = line.split()
        answers[question] = answer
        assert float(seconds) < 1.0, line
    assert answers == {
        "writer.closed": "False",
        # Batches of another size cannot be asked for once reading has started.
        "reader.batches(8)": "ValueError",
        "reader.records_read": "0",
        "reader.pipe_wait_seconds": "True",
    }


# Where each public name is defined: `pipemode` must hand out these very objects.
EXPORTS = {
    "CorruptRecordError": "pipemode.errors",
    "DenseReader": "pipemode.decode",
    "FixedLenFeature": "pipemode.decode",
    "PipeModeChannel": "pipemode.channel",
    "PipeModeDatasetException": "pipemode.errors",
    "PipeModeError": "pipemode.errors",
    "PipeTimeoutError": "pipemode.errors",
    "RecordBatch": "pipemode._native",
    "RecordDecodeError": "pipemode.errors",
    "RecordReader": "pipemode.reader",
    "RecordWriter": "pipemode.reader",
    "__version__": "pipemode._native",
    "decode_examples": "pipemode.decode",
    "encode_example": "pipemode.decode",
}


def test_exports():
    # PipeModeDataset imports TensorFlow: tests/test_imports.py checks it without loading TF.
    assert set(pipemode.__all__) == {*EXPORTS, "PipeModeDataset"}
    for name, module in EXPORTS.items():
        assert getattr(pipemode, name) is getattr(importlib.import_module(module), name), name


def test_batch_size_is_fixed_by_the_first_read(tmp_path):
    path = encode([b"r"] * 10, "RecordIO", tmp_path / "data")
    reader = RecordReader(path, batch_size=4)
    assert [len(b) for b in reader.batches(3)] == [3, 3, 3, 1]  # not started yet: n applies
    reader = RecordReader(path)
    batches = reader.batches(5)
    assert len(next(batches)) == 5
    with pytest.raises(ValueError, match="batch_size=2"):
        next(reader.batches(2))
