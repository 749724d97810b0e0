"""TFRecord compatibility with TensorFlow's own writer and reader, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipemode import RecordReader, RecordWriter

pytestmark = pytest.mark.tf

tf = pytest.importorskip("tensorflow")

records_strategy = st.lists(st.binary(max_size=3000), max_size=20)


def write_with_tf(path: Path, records: list[bytes]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def write_with_pipemode(path: Path, records: list[bytes]) -> None:
    with RecordWriter(path, "TFRecord") as writer:
        for record in records:
            writer.write(record)


@settings(max_examples=40, deadline=None)
@given(records=records_strategy)
def test_our_writer_is_byte_identical_and_tf_reads_it(tmp_path_factory, records):
    folder = tmp_path_factory.mktemp("tf")
    ours, theirs = folder / "ours", folder / "theirs"
    write_with_pipemode(ours, records)
    write_with_tf(theirs, records)
    assert ours.read_bytes() == theirs.read_bytes()
    read_by_tf = [r.numpy() for r in tf.data.TFRecordDataset(str(ours))]
    assert read_by_tf == records


@settings(max_examples=40, deadline=None)
@given(records=records_strategy)
def test_files_from_tf_read_identically(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("tf") / "theirs"
    write_with_tf(path, records)
    assert list(RecordReader(path, "TFRecord")) == records


def test_tf_file_through_a_fifo_reads_like_tf_reads_the_file(fifo, tmp_path):
    records = [bytes([i % 256]) * (i * 37 % 9000) for i in range(500)]
    path = tmp_path / "theirs"
    write_with_tf(path, records)
    expected = [r.numpy() for r in tf.data.TFRecordDataset(str(path))]
    assert list(RecordReader(fifo(path), "TFRecord")) == expected == records


def test_corruption_tf_rejects_is_rejected_too(tmp_path):
    path = tmp_path / "corrupt"
    write_with_tf(path, [b"first", b"second"])
    data = bytearray(path.read_bytes())
    data[-6] ^= 0x40  # inside "second"
    path.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(path)))
    reader = RecordReader(path, "TFRecord")
    read = []
    with pytest.raises(ValueError, match="data CRC mismatch"):
        read.extend(reader)
    assert read == [b"first"]
