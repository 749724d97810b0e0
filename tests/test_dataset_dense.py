"""PipeModeDataset(features=...): Examples decoded in Rust equal TF's parse_example, end to end."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
from pipemode import PipeModeDataset, PipeModeDatasetException  # noqa: E402  (needs TensorFlow)
from test_dataset import recordio, tfrecord  # noqa: E402

pytestmark = pytest.mark.tf

FEATURES = {
    "data": tf.io.FixedLenFeature([], tf.string),
    "labels": tf.io.FixedLenFeature([], tf.int64),
    "weights": tf.io.FixedLenFeature([3], tf.float32),
    "tag": tf.io.FixedLenFeature([], tf.string),
    "optional": tf.io.FixedLenFeature([2], tf.int64, default_value=[7, 8]),
}
DECODE_RAW = {"data": tf.float64}


def examples(count: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        feature = {
            "data": _bytes(rng.normal(size=16).tobytes()),
            "labels": _ints([i % 3]),
            "weights": tf.train.Feature(float_list=tf.train.FloatList(value=rng.random(3))),
            "tag": _bytes(f"tag {i}".encode() * (i % 4)),
            "ignored": _ints([1, 2, 3]),
        }
        if i % 5:
            feature["optional"] = _ints([i, -i])
        records.append(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    return records


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values: list[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def parse_as_tf_does(records: list[bytes], batch_size: int) -> list[dict[str, np.ndarray]]:
    def parse(batch):
        parsed = tf.io.parse_example(batch, FEATURES)
        parsed["data"] = tf.io.decode_raw(parsed["data"], tf.float64)
        return parsed

    dataset = tf.data.Dataset.from_tensor_slices(records).batch(batch_size).map(parse)
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset]


def assert_batches_equal(ours: list[dict], theirs: list[dict]) -> None:
    assert [len(b["labels"]) for b in ours] == [len(b["labels"]) for b in theirs]
    for mine, expected in zip(ours, theirs):
        assert mine.keys() == expected.keys()
        for name in expected:
            assert mine[name].dtype == expected[name].dtype, name
            np.testing.assert_array_equal(mine[name], expected[name], err_msg=name)


@pytest.mark.parametrize(
    ("record_format", "encode"), [("RecordIO", recordio), ("TFRecord", tfrecord)]
)
@pytest.mark.parametrize("batch_size", [64, 7])
def test_dense_batches_equal_parse_example(pipe_job, record_format, encode, batch_size):
    pipe_job.add_channel("train")
    records = examples(1000)  # several blocks, and a last batch that is not full
    pipe_job.feed("train", 0, encode(records))
    dataset = PipeModeDataset(
        "train",
        record_format,
        features=FEATURES,
        decode_raw=DECODE_RAW,
        batch_size=batch_size,
        **pipe_job.dirs(),
    )
    assert dataset.element_spec == {
        "data": tf.TensorSpec([None, None], tf.float64),
        "labels": tf.TensorSpec([None], tf.int64),
        "weights": tf.TensorSpec([None, 3], tf.float32),
        "tag": tf.TensorSpec([None], tf.string),
        "optional": tf.TensorSpec([None, 2], tf.int64),
    }
    ours = [{k: v.numpy() for k, v in batch.items()} for batch in dataset]
    assert_batches_equal(ours, parse_as_tf_does(records, batch_size))


def test_dense_epochs_follow_the_counter(pipe_job):
    pipe_job.add_channel("train")
    first, second = examples(100, seed=1), examples(30, seed=2)
    pipe_job.feed("train", 0, recordio(first))
    pipe_job.feed("train", 1, recordio(second))
    dataset = PipeModeDataset(
        "train", features=FEATURES, decode_raw=DECODE_RAW, **pipe_job.dirs()
    ).repeat(2)
    ours = [{k: v.numpy() for k, v in batch.items()} for batch in dataset]
    assert_batches_equal(ours, parse_as_tf_does(first, 64) + parse_as_tf_does(second, 64))


def test_a_missing_feature_is_an_error_naming_it(pipe_job):
    pipe_job.add_channel("train")
    fifo = pipe_job.feed("train", 0, recordio(examples(10)))
    features = {**FEATURES, "absent": tf.io.FixedLenFeature([], tf.int64)}
    dataset = PipeModeDataset("train", features=features, decode_raw=DECODE_RAW, **pipe_job.dirs())
    with pytest.raises(tf.errors.OpError) as raised:
        list(dataset)
    assert "absent" in raised.value.message
    assert str(fifo) in raised.value.message


def test_unsupported_features_are_rejected_at_construction(pipe_job):
    pipe_job.add_channel("train")
    with pytest.raises(PipeModeDatasetException, match="feature 'x': VarLenFeature is not supp"):
        PipeModeDataset("train", features={"x": tf.io.VarLenFeature(tf.int64)}, **pipe_job.dirs())
    assert (pipe_job.state_dir / ".train-pipe_mode-state").read_bytes() == b"0"


def test_a_bad_batch_size_fails_at_construction_consuming_no_epoch(pipe_job):
    pipe_job.add_channel("train")
    with pytest.raises(PipeModeDatasetException, match=r"^batch_size must be >= 1, not 0$"):
        PipeModeDataset(
            "train", features=FEATURES, decode_raw=DECODE_RAW, batch_size=0, **pipe_job.dirs()
        )
    assert (pipe_job.state_dir / ".train-pipe_mode-state").read_bytes() == b"0"


def test_dtype_spellings_the_decoder_accepts_but_tf_does_not(pipe_job):
    import pipemode

    pipe_job.add_channel("train")
    records = examples(100)
    pipe_job.feed("train", 0, recordio(records))
    features = {
        "data": pipemode.FixedLenFeature([], "bytes"),  # tf.as_dtype refuses "bytes" and "<f4"
        "tag": pipemode.FixedLenFeature([], np.bytes_),
        "weights": pipemode.FixedLenFeature(3, np.float32),
        "labels": pipemode.FixedLenFeature([], np.dtype("int64")),
    }
    dataset = PipeModeDataset(
        "train", features=features, decode_raw={"data": "<f4"}, batch_size=32, **pipe_job.dirs()
    )
    assert dataset.element_spec["data"] == tf.TensorSpec([None, None], tf.float32)
    ours = [{k: v.numpy() for k, v in batch.items()} for batch in dataset]

    tf_features = {
        "data": tf.io.FixedLenFeature([], tf.string),
        "tag": tf.io.FixedLenFeature([], tf.string),
        "weights": tf.io.FixedLenFeature([3], tf.float32),
        "labels": tf.io.FixedLenFeature([], tf.int64),
    }
    theirs = []
    for batch in tf.data.Dataset.from_tensor_slices(records).batch(32):
        parsed = tf.io.parse_example(batch, tf_features)
        parsed["data"] = tf.io.decode_raw(parsed["data"], tf.float32, little_endian=True)
        theirs.append({k: v.numpy() for k, v in parsed.items()})
    assert_batches_equal(ours, theirs)


def test_pipemode_feature_specs_and_benchmark_output(pipe_job, capsys):
    import pipemode

    pipe_job.add_channel("train")
    records = examples(100)
    pipe_job.feed("train", 0, recordio(records))
    features = {
        "data": pipemode.FixedLenFeature([], "string"),
        "labels": pipemode.FixedLenFeature([], "int64"),
        "weights": pipemode.FixedLenFeature(3, "float32"),
    }
    dataset = PipeModeDataset(
        "train",
        features=features,
        decode_raw={"data": "float64"},
        batch_size=64,
        benchmark=True,
        **pipe_job.dirs(),
    )
    assert dataset.element_spec["weights"] == tf.TensorSpec([None, 3], tf.float32)
    batches = [{k: v.numpy() for k, v in batch.items()} for batch in dataset]
    expected = parse_as_tf_does(records, 64)
    assert_batches_equal(batches, [{k: b[k] for k in features} for b in expected])
    (done,) = [line for line in capsys.readouterr().out.splitlines() if "finished" in line]
    assert "channel 'train' epoch 0 finished: 100 records" in done
