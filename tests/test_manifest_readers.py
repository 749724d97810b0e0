"""Readers of augmented-manifest channels: one element per manifest line, attributes together.

The FIFOs are fed by real `cat` processes (see conftest); the streams are RecordIO framed here,
by hand, as the runner frames one record per attribute.
"""

from __future__ import annotations

import struct

import pytest
from pipemode import CorruptRecordError, PipeModeChannel, PipeModeDatasetException

NAMES = ["source-ref", "class"]


def recordio(records: list[bytes]) -> bytes:
    return b"".join(
        struct.pack("<II", 0xCED7230A, len(r)) + r + b"\0" * (-len(r) % 4) for r in records
    )


def lines(count: int) -> list[dict[str, bytes]]:
    return [{"source-ref": b"\xff\xd8image %d" % i, "class": b"%d" % (i % 3)} for i in range(count)]


def flat(manifest_lines: list[dict[str, bytes]]) -> list[bytes]:
    return [line[name] for line in manifest_lines for name in NAMES]


def test_a_channel_yields_each_line_as_a_dict(pipe_job):
    pipe_job.add_channel("train", record_wrapping="RecordIO")
    # 2,500 lines cross several reader batches, and lines straddle batch boundaries.
    want = lines(2500)
    pipe_job.feed("train", 0, recordio(flat(want)))
    channel = PipeModeChannel("train", attribute_names=NAMES, **pipe_job.dirs())
    epoch = channel.next_epoch(batch_size=999)
    assert list(epoch) == want
    assert epoch.epoch.number == 0


def test_a_partial_line_is_an_error_naming_channel_and_epoch(pipe_job):
    pipe_job.add_channel("train", record_wrapping="RecordIO")
    records = flat(lines(3))[:-1]
    stream = recordio(records)
    fifo = pipe_job.feed("train", 0, stream)
    channel = PipeModeChannel("train", attribute_names=NAMES, **pipe_job.dirs())
    got = []
    with pytest.raises(CorruptRecordError) as raised:
        for line in channel.next_epoch():
            got.append(line)
    assert got == lines(2)  # the whole lines, then the error; never a misaligned line
    message = str(raised.value)
    assert "channel 'train' epoch 0" in message
    assert "5 records" in message and "the last line has only 1" in message
    assert raised.value.path == str(fifo)
    assert raised.value.offset == len(stream)


def test_attribute_names_on_a_channel_without_recordio_wrapping_are_refused(pipe_job):
    pipe_job.add_channel("train", record_wrapping="None")  # as SageMaker writes it
    with pytest.raises(
        PipeModeDatasetException,
        match=r"Channel train has RecordWrapperType None .*needs RecordWrapperType: RecordIO",
    ):
        PipeModeChannel("train", attribute_names=NAMES, **pipe_job.dirs())
    PipeModeChannel("train", **pipe_job.dirs())  # without attribute_names, any wrapping


UNWRAPPED_HINT = r"attribute_names needs the channel's RecordWrapperType: RecordIO"


def test_an_unwrapped_stream_says_attribute_names_need_recordio(pipe_job):
    pipe_job.add_channel("train", record_wrapping=None)  # the config does not say
    fifo = pipe_job.feed("train", 0, b"".join(flat(lines(3))))  # the values one after another
    channel = PipeModeChannel("train", attribute_names=NAMES, **pipe_job.dirs())
    with pytest.raises(CorruptRecordError, match=r"bad magic .*; " + UNWRAPPED_HINT) as raised:
        list(channel.next_epoch())
    assert str(fifo) in raised.value.path and raised.value.offset == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attribute_names": []}, "1 to 16"),
        ({"attribute_names": "class"}, "1 to 16"),
        ({"attribute_names": [f"a{i}" for i in range(17)]}, "1 to 16"),
        ({"attribute_names": ["a", "a"]}, "distinct"),
        ({"attribute_names": ["a", ""]}, "distinct"),
        ({"attribute_names": ["a"], "record_format": "TextLine"}, "RecordIO"),
    ],
)
def test_bad_attribute_names_are_refused_at_construction(pipe_job, options, message):
    pipe_job.add_channel("train", record_wrapping="RecordIO")
    with pytest.raises(PipeModeDatasetException, match=message):
        PipeModeChannel("train", **options, **pipe_job.dirs())


@pytest.mark.tf
def test_pipe_mode_dataset_yields_one_dict_of_strings_per_line(pipe_job):
    tf = pytest.importorskip("tensorflow")
    from pipemode import PipeModeDataset

    pipe_job.add_channel("train", record_wrapping="RecordIO")
    want = lines(1500)
    for epoch in range(2):
        pipe_job.feed("train", epoch, recordio(flat(want)))
    dataset = PipeModeDataset("train", attribute_names=NAMES, **pipe_job.dirs())
    assert dataset.element_spec == {name: tf.TensorSpec((), tf.string) for name in NAMES}
    for _ in range(2):  # each iterator reads the next epoch
        got = [{k: v.numpy() for k, v in line.items()} for line in dataset]
        assert got == want


@pytest.mark.tf
def test_pipe_mode_dataset_fails_on_a_partial_line(pipe_job):
    tf = pytest.importorskip("tensorflow")
    from pipemode import PipeModeDataset

    pipe_job.add_channel("train", record_wrapping="RecordIO")
    pipe_job.feed("train", 0, recordio(flat(lines(4))[:-1]))
    dataset = PipeModeDataset("train", attribute_names=NAMES, **pipe_job.dirs())
    got = []
    with pytest.raises(tf.errors.OpError, match=r"channel 'train' epoch 0: 7 records"):
        for line in dataset:
            got.append(line["class"].numpy())
    assert got == [b"0", b"1", b"2"]


@pytest.mark.tf
def test_pipe_mode_dataset_says_attribute_names_need_recordio(pipe_job):
    tf = pytest.importorskip("tensorflow")
    from pipemode import PipeModeDataset

    pipe_job.add_channel("train", record_wrapping=None)
    pipe_job.feed("train", 0, b"".join(flat(lines(3))))
    dataset = PipeModeDataset("train", attribute_names=NAMES, **pipe_job.dirs())
    with pytest.raises(tf.errors.OpError, match=UNWRAPPED_HINT):
        list(dataset)


@pytest.mark.tf
def test_attribute_names_do_not_go_with_features(pipe_job):
    tf = pytest.importorskip("tensorflow")
    from pipemode import PipeModeDataset

    pipe_job.add_channel("train", record_wrapping="RecordIO")
    with pytest.raises(PipeModeDatasetException, match="features"):
        PipeModeDataset(
            "train",
            attribute_names=NAMES,
            features={"x": tf.io.FixedLenFeature([], tf.int64)},
            **pipe_job.dirs(),
        )
