"""PipeModeDataset on real FIFOs: the incumbent's behaviour in tf.data, Keras and SavedModel."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FifoFeeder, PipeJob
from hypothesis import given, settings
from hypothesis import strategies as st
from pipemode import PipeModeDatasetException

tf = pytest.importorskip("tensorflow")
from pipemode import PipeModeDataset  # noqa: E402  (needs TensorFlow)
from pipemode.tensorflow import RAW_BATCH_BYTES  # noqa: E402

pytestmark = pytest.mark.tf


# Reference encoders written from the format specs (facts §3-5), independent of the reader.
def recordio(records: list[bytes]) -> bytes:
    return b"".join(
        struct.pack("<II", 0xCED7230A, len(r)) + r + b"\0" * (-len(r) % 4) for r in records
    )


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def tfrecord(records: list[bytes]) -> bytes:
    out = b""
    for r in records:
        length = struct.pack("<Q", len(r))
        out += length + struct.pack("<I", _masked_crc(length)) + r
        out += struct.pack("<I", _masked_crc(r))
    return out


def textline(records: list[bytes]) -> bytes:
    return b"".join(r + b"\n" for r in records)


ENCODERS = {"RecordIO": recordio, "TFRecord": tfrecord, "TextLine": textline}


def some_records(count: int, tag: str = "") -> list[bytes]:
    return [f"{tag}record {i} ".encode() * (i % 7) for i in range(count)]


def records_of(dataset) -> list[bytes]:
    return [element.numpy() for element in dataset]


@pytest.mark.parametrize("record_format", list(ENCODERS))
def test_each_framing_yields_its_records(pipe_job, record_format):
    pipe_job.add_channel("train")
    # Records without newlines so TextLine carries them too; a few batches' worth plus a rest.
    records = some_records(2500)
    pipe_job.feed("train", 0, ENCODERS[record_format](records))
    dataset = PipeModeDataset("train", record_format, **pipe_job.dirs())
    assert isinstance(dataset, tf.data.Dataset)
    assert dataset.element_spec == tf.TensorSpec(shape=(), dtype=tf.string, name=None)
    assert dataset.cardinality() == tf.data.UNKNOWN_CARDINALITY
    assert (dataset.channel, dataset.record_format) == ("train", record_format)
    assert dataset.pipe_dir == str(pipe_job.pipe_dir)
    assert records_of(dataset) == records


def test_construction_makes_the_incumbents_checks(pipe_job):
    pipe_job.add_channel("train", mode="File")
    with pytest.raises(PipeModeDatasetException, match="Channel train is not a PipeMode channel"):
        PipeModeDataset("train", **pipe_job.dirs())
    with pytest.raises(PipeModeDatasetException, match="not found in Training Job"):
        PipeModeDataset("eval", **pipe_job.dirs())


def test_a_bad_reader_option_fails_at_construction_consuming_no_epoch(pipe_job):
    pipe_job.add_channel("train")
    PipeModeDataset("train", **pipe_job.dirs())
    with pytest.raises(PipeModeDatasetException, match=r'^Invalid multipart mode: "bogus"'):
        PipeModeDataset("train", multipart="bogus", **pipe_job.dirs())
    assert (pipe_job.state_dir / ".train-pipe_mode-state").read_bytes() == b"0"


def test_repeat_reads_the_next_epoch_per_pass(pipe_job):
    pipe_job.add_channel("train")
    epochs = [some_records(300, tag=f"epoch {n} ") for n in range(3)]
    for n, records in enumerate(epochs):
        pipe_job.feed("train", n, recordio(records))
    dataset = PipeModeDataset("train", **pipe_job.dirs())
    assert records_of(dataset.repeat(3)) == epochs[0] + epochs[1] + epochs[2]
    assert (pipe_job.state_dir / ".train-pipe_mode-state").read_bytes() == b"3"


def test_a_recreated_dataset_continues_with_the_next_epoch(pipe_job):
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, recordio([b"zero"]))
    pipe_job.feed("train", 1, recordio([b"one"]))
    assert records_of(PipeModeDataset("train", **pipe_job.dirs())) == [b"zero"]
    assert records_of(PipeModeDataset("train", **pipe_job.dirs())) == [b"one"]


def test_an_iterator_created_and_discarded_consumes_nothing(pipe_job):
    pipe_job.add_channel("train")
    dataset = PipeModeDataset("train", **pipe_job.dirs())
    # No FIFO exists yet: an iterator that claimed or opened one would hang or fail here.
    for _ in range(3):
        iterator = iter(dataset.map(tf.strings.length).batch(8))
        del iterator
    assert (pipe_job.state_dir / ".train-pipe_mode-state").read_bytes() == b"0"
    pipe_job.feed("train", 0, recordio([b"first"]))
    assert records_of(dataset) == [b"first"]


def test_two_live_iterators_read_different_epochs(pipe_job):
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, recordio([b"a0", b"a1"]))
    pipe_job.feed("train", 1, recordio([b"b0", b"b1"]))
    dataset = PipeModeDataset("train", **pipe_job.dirs())
    first, second = iter(dataset), iter(dataset)
    assert next(first).numpy() == b"a0"
    assert next(second).numpy() == b"b0"
    assert [x.numpy() for x in first] == [b"a1"]
    assert [x.numpy() for x in second] == [b"b1"]


def test_two_datasets_on_one_channel_share_the_counter(pipe_job):
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, recordio([b"zero"]))
    pipe_job.feed("train", 1, recordio([b"one"]))
    first = PipeModeDataset("train", **pipe_job.dirs())
    second = PipeModeDataset("train", **pipe_job.dirs())
    assert records_of(second) == [b"zero"]
    assert records_of(first) == [b"one"]


def test_two_channels_zipped(pipe_job):
    pipe_job.add_channel("train")
    pipe_job.add_channel("labels")
    pipe_job.feed("train", 0, recordio(some_records(1500, "x")))
    pipe_job.feed("labels", 0, tfrecord(some_records(1500, "y")))
    zipped = tf.data.Dataset.zip(
        (
            PipeModeDataset("train", **pipe_job.dirs()),
            PipeModeDataset("labels", "TFRecord", **pipe_job.dirs()),
        )
    )
    pairs = [(x.numpy(), y.numpy()) for x, y in zipped]
    assert pairs == list(zip(some_records(1500, "x"), some_records(1500, "y")))


def test_sample_from_datasets(pipe_job):
    pipe_job.add_channel("a")
    pipe_job.add_channel("b")
    pipe_job.feed("a", 0, recordio(some_records(200, "a")))
    pipe_job.feed("b", 0, recordio(some_records(200, "b")))
    mixed = tf.data.Dataset.sample_from_datasets(
        [PipeModeDataset("a", **pipe_job.dirs()), PipeModeDataset("b", **pipe_job.dirs())], seed=7
    )
    assert sorted(records_of(mixed)) == sorted(some_records(200, "a") + some_records(200, "b"))


def test_textline_with_decode_csv(pipe_job):
    pipe_job.add_channel("train")
    lines = [f"{i},{i * 0.5},name{i}".encode() for i in range(1200)]
    pipe_job.feed("train", 0, textline(lines))
    dataset = PipeModeDataset("train", "TextLine", **pipe_job.dirs())
    columns = dataset.map(lambda line: tf.io.decode_csv(line, [[0], [0.0], [""]])).batch(1000)
    ints, floats, names = (np.concatenate(c) for c in zip(*columns))
    assert ints.tolist() == list(range(1200))
    assert np.allclose(floats, np.arange(1200) * 0.5)
    assert names[-1] == b"name1199"


def _corrupt_data_crc(stream: bytes, records: list[bytes], index: int) -> bytes:
    # The data CRC of record `index` is the 4 bytes just before record index + 1.
    end = sum(16 + len(r) for r in records[: index + 1])
    return stream[: end - 4] + bytes(b ^ 0xFF for b in stream[end - 4 : end]) + stream[end:]


def test_corrupted_tfrecords_are_skipped_when_asked(pipe_job):
    pipe_job.add_channel("train")
    records = some_records(50)
    pipe_job.feed("train", 0, _corrupt_data_crc(tfrecord(records), records, 10))
    dataset = PipeModeDataset(
        "train", "TFRecord", max_corrupted_records_to_skip=1, **pipe_job.dirs()
    )
    assert records_of(dataset) == records[:10] + records[11:]


def test_a_corrupted_tfrecord_is_an_error_naming_channel_and_offset(pipe_job):
    pipe_job.add_channel("train")
    records = some_records(50)
    fifo = pipe_job.feed("train", 0, _corrupt_data_crc(tfrecord(records), records, 10))
    offset = sum(16 + len(r) for r in records[:10])
    with pytest.raises(tf.errors.OpError) as raised:
        records_of(PipeModeDataset("train", "TFRecord", **pipe_job.dirs()))
    assert str(fifo) in raised.value.message
    assert str(offset) in raised.value.message


def test_a_truncated_recordio_payload_is_an_error_not_a_record(pipe_job):
    pipe_job.add_channel("train")
    stream = recordio([b"whole", b"x" * 100])
    fifo = pipe_job.feed("train", 0, stream[:-20])
    with pytest.raises(tf.errors.OpError) as raised:
        records_of(PipeModeDataset("train", **pipe_job.dirs()))
    assert "train" in raised.value.message
    assert str(fifo) in raised.value.message
    # The second record starts at byte 16: an 8-byte header, "whole" and 3 bytes of padding.
    assert re.search(r"offset\D{0,8}16\b", raised.value.message)


def test_a_missing_fifo_is_waited_for_then_a_clear_error(pipe_job):
    pipe_job.add_channel("train")
    dataset = PipeModeDataset("train", open_timeout=0.5, **pipe_job.dirs())
    started = time.monotonic()
    with pytest.raises(tf.errors.OpError) as raised:
        records_of(dataset)
    assert time.monotonic() - started < 10
    assert str(pipe_job.pipe_dir / "train_0") in raised.value.message


def test_benchmark_reports_throughput_in_its_own_lines_and_the_incumbents(pipe_job, capsys):
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, recordio(some_records(3000)))
    dataset = PipeModeDataset(
        "train", benchmark=True, benchmark_records_interval=1000, **pipe_job.dirs()
    )
    assert len(records_of(dataset)) == 3000
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "epoch 0 in progress: " in line]
    (done,) = [line for line in lines if "finished" in line]
    assert "channel 'train' epoch 0 finished: 3000 records" in done
    assert "MB/s" in done
    assert "on the pipe" in done
    assert "on TensorFlow" in done
    # SageMaker jobs turn the incumbent's lines into metrics with regexes: not a word may change.
    prefix = "PipeModeDatasetOp::Dataset::Iterator "
    counts = [line for line in lines if line.startswith(prefix + "records: ")]
    assert counts == [f"{prefix}records: {n}" for n in (1000, 2000, 3000)]
    for name in ("records read_time_ns", "records read_bytes"):
        assert len([line for line in lines if re.fullmatch(f"{prefix}{name}: [0-9]+", line)]) == 3
    assert re.search(f"^{prefix}total read_time_ms: [0-9]+$", "\n".join(lines), re.M)
    assert f"{prefix}total read_bytes: {len(recordio(some_records(3000)))}" in lines
    assert [line for line in lines if line.startswith(f"{prefix}total read_GB/s: ")]


def test_benchmark_lines_are_printed_only_when_asked(pipe_job, capfd):
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, recordio([b"bear"]))
    pipe_job.feed("train", 1, recordio([b"bear"]))
    quiet = PipeModeDataset("train", benchmark_records_interval=0, **pipe_job.dirs())
    assert next(iter(quiet)).numpy() == b"bear"
    assert "Iterator records" not in capfd.readouterr().out
    every_record = PipeModeDataset("train", benchmark_records_interval=1, **pipe_job.dirs())
    assert next(iter(every_record)).numpy() == b"bear"
    # Printed as soon as the record is read, before the dataset hands it on.
    assert "PipeModeDatasetOp::Dataset::Iterator records: 1\n" in capfd.readouterr().out


DIMENSION = 16


def tutorial_examples(count: int, classes: int = 2, seed: int = 0) -> list[bytes]:
    """The tutorial's records (facts §6), smaller: `data` float64 bytes and an int64 `labels`."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(count):
        label = i % classes
        data = rng.normal(int(label - classes / 2), 1.0, DIMENSION).astype(np.float64)
        feature = {
            "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data.tobytes()])),
            "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        examples.append(example.SerializeToString())
    return examples


TUTORIAL_FEATURES = {
    "data": tf.io.FixedLenFeature([], tf.string),
    "labels": tf.io.FixedLenFeature([], tf.int64),
}


def parse_tutorial(record):
    """The tutorial script's per-record parse."""
    parsed = tf.io.parse_single_example(record, TUTORIAL_FEATURES)
    data = tf.io.decode_raw(parsed["data"], tf.float64)
    data.set_shape([DIMENSION])
    return data, tf.cast(parsed["labels"], tf.float32)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_keras_fit_reads_one_fifo_per_epoch_then_evaluates_and_exports(pipe_job, tmp_path):
    pipe_job.add_channel("train")
    pipe_job.add_channel("eval")
    for epoch in range(3):
        pipe_job.feed("train", epoch, recordio(tutorial_examples(256, seed=epoch)))
    pipe_job.feed("eval", 0, recordio(tutorial_examples(128, seed=9)))

    def batches(channel: str) -> tf.data.Dataset:
        dataset = PipeModeDataset(channel, **pipe_job.dirs())
        return dataset.prefetch(10).map(parse_tutorial).batch(64)

    # Logistic regression from zero weights: the result does not depend on a random draw.
    classifier = tf.keras.layers.Dense(1, activation="sigmoid", kernel_initializer="zeros")
    model = tf.keras.Sequential([tf.keras.Input((DIMENSION,)), classifier])
    model.compile(tf.keras.optimizers.Adam(0.1), "binary_crossentropy", metrics=["accuracy"])
    history = model.fit(batches("train"), epochs=3, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 3
    assert (pipe_job.state_dir / ".train-pipe_mode-state").read_bytes() == b"3"

    _, accuracy = model.evaluate(batches("eval"), verbose=0)
    assert accuracy > 0.8  # it learned: the data arrived whole and in order with its labels
    assert (pipe_job.state_dir / ".eval-pipe_mode-state").read_bytes() == b"1"

    # The exported model serves on its own: no input pipeline, no FIFO, no PipeModeDataset.
    export_dir = tmp_path / "model"
    model.export(str(export_dir))
    for fifo in pipe_job.pipe_dir.glob("*_[0-9]*"):
        fifo.unlink()
    served = (loaded := tf.saved_model.load(str(export_dir))).serve(tf.zeros([2, DIMENSION]))
    assert not [op for op in _graph_ops(loaded) if "Dataset" in op or "PyFunc" in op]
    assert served.shape == (2, 1)
    assert np.allclose(served.numpy(), model(tf.zeros([2, DIMENSION])).numpy(), atol=1e-6)


def _graph_ops(loaded) -> set[str]:
    graph = loaded.serve.get_concrete_function(tf.TensorSpec([None, DIMENSION])).graph
    return {op.type for op in graph.get_operations()}


@pytest.mark.parametrize(
    ("multipart", "joined"),
    [("dmlc", b"abc" + struct.pack("<I", 0xCED7230A) + b"defg"), ("concat", b"abcdefg")],
)
def test_multipart_recordio_joins_as_asked(pipe_job, multipart, joined):
    pipe_job.add_channel("train")

    def part(cflag: int, payload: bytes) -> bytes:
        header = struct.pack("<II", 0xCED7230A, (cflag << 29) | len(payload))
        return header + payload + b"\0" * (-len(payload) % 4)

    stream = recordio([b"before"]) + part(1, b"abc") + part(3, b"defg") + recordio([b"after"])
    pipe_job.feed("train", 0, stream)
    dataset = PipeModeDataset("train", multipart=multipart, **pipe_job.dirs())
    assert records_of(dataset) == [b"before", joined, b"after"]


def test_an_empty_epoch_is_empty_and_the_next_one_follows(pipe_job):
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, b"")
    pipe_job.feed("train", 1, recordio([b"", b"after an empty record"]))
    dataset = PipeModeDataset("train", **pipe_job.dirs())
    assert records_of(dataset.repeat(2)) == [b"", b"after an empty record"]


def test_records_larger_than_a_batch_round_trip_between_small_ones(pipe_job):
    # A batch is bounded by RAW_BATCH_BYTES unless one record is larger: such a record is a
    # batch of its own, and those around it are neither lost nor reordered.
    big = RAW_BATCH_BYTES + 1
    sizes = [0, big, 1, 3 * big, 3] + [100] * 1500 + [2 * big]
    records = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, recordio(records))
    assert records_of(PipeModeDataset("train", **pipe_job.dirs())) == records


@settings(max_examples=30, deadline=None)
@given(
    record_format=st.sampled_from(list(ENCODERS)),
    records=st.lists(st.binary(max_size=3000), max_size=40),
    batch=st.sampled_from([None, 1, 7]),
)
def test_arbitrary_records_round_trip_through_a_fifo(record_format, records, batch):
    if record_format == "TextLine":
        records = [r.replace(b"\n", b"") for r in records]
    with tempfile.TemporaryDirectory() as root:
        feeder = FifoFeeder(Path(root))
        try:
            job = PipeJob(Path(root), feeder)
            job.add_channel("train")
            job.feed("train", 0, ENCODERS[record_format](records))
            dataset = PipeModeDataset("train", record_format, open_timeout=30, **job.dirs())
            if batch is None:
                assert records_of(dataset) == records
            else:
                batched = [r for b in dataset.batch(batch) for r in b.numpy().tolist()]
                assert batched == records
        finally:
            feeder.close()


_COUNT_PAGE_FAULTS = """
import json, resource, sys
import tensorflow as tf
from pipemode import PipeModeDataset

lengths = PipeModeDataset("train", **json.loads(sys.argv[1])).map(tf.strings.length).batch(64)
sum(1 for _ in lengths)  # epoch 0: the heap grows to what the pipeline needs
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
count = sum(int(tf.size(batch)) for batch in lengths)  # epoch 1, counted
print(count, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / count)
"""


def test_raw_batches_reuse_the_heap_instead_of_faulting_it_in_again(pipe_job):
    # Each batch's records become Python bytes, then TF strings, then are freed. With glibc's
    # trim threshold as TF leaves it (128 KiB) the heap gave those pages back and faulted them
    # in again: ~4 page faults per 8 KB record on TF 2.21. Counted in a process of its own, so
    # that what this process's heap has been through counts for nothing, on its second epoch.
    records = [bytes([i % 251]) * 8192 for i in range(16000)]
    pipe_job.add_channel("train")
    for epoch in range(2):
        pipe_job.feed("train", epoch, recordio(records))
    child = [sys.executable, "-c", _COUNT_PAGE_FAULTS, json.dumps(pipe_job.dirs())]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    out = subprocess.run(child, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    count, faults_per_record = out.stdout.split()
    print(f"{faults_per_record} page faults per record")
    assert int(count) == len(records)
    assert float(faults_per_record) < 1.0
