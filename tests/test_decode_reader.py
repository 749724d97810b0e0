"""DenseReader: Example records from real FIFOs and files, decoded on the reader thread."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from pipemode import (
    DenseReader,
    FixedLenFeature,
    RecordDecodeError,
    RecordWriter,
    decode_examples,
    encode_example,
)

SPEC = {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")}
RAW = {"data": "float64"}


def tutorial_records(count: int, dim: int = 1024) -> list[bytes]:
    rng = np.random.default_rng(count)
    return [
        encode_example({"data": rng.normal(i % 2 - 1, 1, dim).tobytes(), "labels": [i % 2]})
        for i in range(count)
    ]


def write(path: Path, records: list[bytes], record_format: str) -> Path:
    with RecordWriter(path, record_format) as writer:
        for record in records:
            writer.write(record)
    return path


@pytest.mark.parametrize("record_format", ["RecordIO", "TFRecord"])
def test_batches_from_a_fifo_equal_decoding_every_record(
    tmp_path: Path, fifo: Callable[..., Path], record_format: str
) -> None:
    records = tutorial_records(1000)
    channel = fifo(write(tmp_path / "data", records, record_format))
    with DenseReader(
        channel, record_format, features=SPEC, decode_raw=RAW, batch_size=64, batches_per_block=4
    ) as reader:
        batches = list(reader)
        assert reader.records_read == 1000
    assert [len(b["labels"]) for b in batches] == [64] * 15 + [40]
    expected = decode_examples(records, SPEC, RAW)
    for name in SPEC:
        np.testing.assert_array_equal(np.concatenate([b[name] for b in batches]), expected[name])
    for batch in batches:
        assert batch["data"].ctypes.data % 64 == 0 and batch["data"].shape[1:] == (1024,)


def test_blocks_hold_whole_batches_until_the_last(
    tmp_path: Path, fifo: Callable[..., Path]
) -> None:
    channel = fifo(write(tmp_path / "data", tutorial_records(300, dim=4), "RecordIO"))
    reader = DenseReader(channel, features=SPEC, decode_raw=RAW, batch_size=32, batches_per_block=4)
    blocks = list(reader.blocks())
    assert [len(b["labels"]) for b in blocks] == [128, 128, 44]
    assert blocks[0]["data"].shape == (128, 4) and blocks[0]["data"].dtype == np.float64


def test_blocks_end_after_the_batch_that_brings_them_to_2_mib(
    tmp_path: Path, fifo: Callable[..., Path]
) -> None:
    # 8 KB rows: four batches of 64 hold 2 MiB, well before the 16 batches a block has room for.
    channel = fifo(write(tmp_path / "data", tutorial_records(600), "RecordIO"))
    with DenseReader(channel, features=SPEC, decode_raw=RAW, batch_size=64) as reader:
        assert [len(b["labels"]) for b in reader.blocks()] == [256, 256, 88]


def test_nothing_is_opened_before_the_first_read(tmp_path: Path) -> None:
    fifo = tmp_path / "train_0"
    os.mkfifo(fifo)
    reader = DenseReader(fifo, features=SPEC, open_timeout=0.5)
    time.sleep(0.2)
    # A writer's non-blocking open fails with ENXIO while no reader has the FIFO open.
    with pytest.raises(OSError) as no_reader:
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert no_reader.value.errno == errno.ENXIO
    with pytest.raises(TimeoutError):
        next(iter(reader))  # now it opens the FIFO, and waits in vain for a writer


def test_a_bad_record_names_path_record_offset_and_feature(
    tmp_path: Path, fifo: Callable[..., Path]
) -> None:
    records = tutorial_records(10, dim=2)
    records[7] = encode_example({"data": np.zeros(2).tobytes()})  # no labels
    path = write(tmp_path / "data", records, "RecordIO")
    # RecordIO: an 8-byte header, then the payload padded to 4 bytes.
    offset = sum(8 + (len(r) + 3) // 4 * 4 for r in records[:7])
    reader = DenseReader(fifo(path), features=SPEC, decode_raw=RAW, batch_size=2, name="train")
    seen = []
    with pytest.raises(RecordDecodeError) as caught:
        for batch in reader:
            seen.extend(batch["labels"].tolist())
    assert seen == [i % 2 for i in range(7)], "every record before the bad one"
    error = caught.value
    assert (error.record, error.offset) == (7, offset)
    assert "train" in error.path and str(path.parent) in error.path
    assert "feature 'labels' (int64) is required but missing" in str(error)


def test_a_closed_reader_yields_nothing_more(tmp_path: Path, fifo: Callable[..., Path]) -> None:
    channel = fifo(write(tmp_path / "data", tutorial_records(500, dim=8), "RecordIO"))
    reader = DenseReader(channel, features=SPEC, decode_raw=RAW, batch_size=16, batches_per_block=1)
    batches = iter(reader)
    assert len(next(batches)["labels"]) == 16
    reader.close()
    assert list(reader.blocks()) == []


def test_corrupt_tfrecords_are_skipped_and_reported(
    tmp_path: Path, fifo: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    records = tutorial_records(5, dim=2)
    data = bytearray(write(tmp_path / "data", records, "TFRecord").read_bytes())
    # TFRecord: length (8), its CRC (4), payload, payload CRC (4). Break record 2's payload CRC.
    end_of_record_2 = sum(16 + len(r) for r in records[:3])
    data[end_of_record_2 - 1] ^= 0xFF
    reader = DenseReader(
        fifo(bytes(data)),
        "TFRecord",
        features=SPEC,
        decode_raw=RAW,
        max_corrupted_records_to_skip=1,
    )
    with caplog.at_level("WARNING", logger="pipemode"):
        (batch,) = list(reader)
    assert batch["labels"].tolist() == [0, 1, 1, 0]
    assert reader.records_skipped == 1
    assert "skipped 1 corrupt TFRecord record" in caplog.text


def test_decode_raw_sizes_may_change_between_batches_as_in_tf(
    tmp_path: Path, fifo: Callable[..., Path]
) -> None:
    # decode_raw fixes one size per batch, so records of 4, then 8 floats work batch by batch.
    records = tutorial_records(96, dim=4) + tutorial_records(64, dim=8)
    channel = fifo(write(tmp_path / "data", records, "RecordIO"))
    reader = DenseReader(channel, features=SPEC, decode_raw=RAW, batch_size=32, batches_per_block=4)
    batches = list(reader)
    assert [b["data"].shape for b in batches] == [(32, 4)] * 3 + [(32, 8)] * 2
    for i, batch in enumerate(batches):
        expected = decode_examples(records[32 * i : 32 * (i + 1)], SPEC, RAW)
        np.testing.assert_array_equal(batch["data"], expected["data"])


def test_decode_raw_sizes_must_agree_within_a_batch(
    tmp_path: Path, fifo: Callable[..., Path]
) -> None:
    records = tutorial_records(40, dim=4) + tutorial_records(40, dim=8)
    channel = fifo(write(tmp_path / "data", records, "RecordIO"))
    reader = DenseReader(channel, features=SPEC, decode_raw=RAW, batch_size=32)
    with pytest.raises(RecordDecodeError, match="expected 32 bytes") as caught:
        list(reader)
    assert caught.value.record == 40
