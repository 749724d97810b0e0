"""PipeModeDataset under tf.distribute: no record lost to auto-sharding; and
MultiWorkerMirroredStrategy trained for real over 2 hosts on loopback, reading ShardedByS3Key
channels from S3 (moto)."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pytest
from conftest import PipeJob
from pipemode.decode import encode_example
from pipemode.runner import Channel, JobResult, TrainingJob
from pipemode.runner.distribution import Distribution
from pipemode.runner.sources import s3_client
from runner_helpers import moto_s3_server, recorded, use_s3_endpoint

tf = pytest.importorskip("tensorflow")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from pipemode import PipeModeDataset  # noqa: E402  (needs TensorFlow)
from tensorflow.python.distribute import input_ops  # noqa: E402

pytestmark = pytest.mark.tf

ID = {"id": tf.io.FixedLenFeature([], tf.int64)}


def recordio(records: list[bytes]) -> bytes:
    return b"".join(
        struct.pack("<II", 0xCED7230A, len(r)) + r + b"\0" * (-len(r) % 4) for r in records
    )


def examples(ids: range) -> bytes:
    return recordio([encode_example({"id": [i]}) for i in ids])


def first_worker_of_two(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """What `experimental_distribute_dataset` (and Keras `fit`) under a 2-worker strategy
    applies to worker 0's dataset: TF's auto-shard rewrite."""
    return input_ops.auto_shard_dataset(dataset, 2, 0, 2)


def ids_of(dataset: tf.data.Dataset, dense: bool) -> list[int]:
    if dense:
        return [int(i) for batch in dataset for i in batch["id"]]
    parsed = dataset.map(lambda r: tf.io.parse_single_example(r, ID)["id"])
    return [int(i) for i in parsed]


@pytest.mark.parametrize("dense", [False, True], ids=["raw", "features"])
def test_a_worker_under_a_strategy_reads_every_record_of_its_pipe(
    pipe_job: PipeJob, dense: bool
) -> None:
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, examples(range(100)))
    features = {"features": ID, "batch_size": 8} if dense else {}
    dataset = PipeModeDataset("train", **pipe_job.dirs(), **features)  # type: ignore[arg-type]
    assert ids_of(first_worker_of_two(dataset), dense) == list(range(100))
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.OFF


def test_with_auto_sharding_back_on_a_worker_would_keep_half_its_pipe(pipe_job: PipeJob) -> None:
    # What OFF prevents: a from_generator dataset has no files to shard, so TF's default (AUTO)
    # falls back to DATA, and worker 0 of 2 keeps every other record of what its pipe holds.
    pipe_job.add_channel("train")
    pipe_job.feed("train", 0, examples(range(100)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = PipeModeDataset("train", **pipe_job.dirs()).with_options(options)
    assert ids_of(first_worker_of_two(dataset), dense=False) == list(range(0, 100, 2))


# -- two hosts, MultiWorkerMirroredStrategy, S3 ---------------------------------------------

# Linear regression y = 2x + 1 on x = id / 100, one global batch per step, in a custom loop:
# `repeat()` and fixed steps per epoch, the same on every worker. Variables aggregate their
# updates by MEAN across workers, so every worker applies the same step. Each host records the
# ids it trained on, in order, and its final weights.
_MWMS_SCRIPT = """
import json, os, sys, time
import tensorflow as tf
from pipemode import PipeModeDataset

epochs, steps, batch = (int(a) for a in sys.argv[1:4])
crash_host, crash_step = os.environ.get("CRASH_HOST"), int(os.environ.get("CRASH_STEP", -1))
strategy = tf.distribute.MultiWorkerMirroredStrategy()
features = {"id": tf.io.FixedLenFeature([], tf.int64)}
data = PipeModeDataset("train").repeat()
data = data.map(lambda r: tf.io.parse_single_example(r, features)["id"])
# experimental_distribute_dataset takes the global batch and gives each worker its share.
global_batch = batch * strategy.num_replicas_in_sync
data = data.batch(global_batch, drop_remainder=True)
iterator = iter(strategy.experimental_distribute_dataset(data))
with strategy.scope():
    w = tf.Variable(0.0, aggregation=tf.VariableAggregation.MEAN)
    b = tf.Variable(0.0, aggregation=tf.VariableAggregation.MEAN)

@tf.function
def train_step(ids):
    def replica_step(ids):
        x = tf.cast(ids, tf.float32) / 100.0
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(w * x + b - (2.0 * x + 1.0)))
        grad_w, grad_b = tape.gradient(loss, [w, b])
        w.assign_sub(0.1 * grad_w)
        b.assign_sub(0.1 * grad_b)
    strategy.run(replica_step, args=(ids,))

seen = []
host = os.environ["SM_CURRENT_HOST"]
for step in range(epochs * steps):
    if host == crash_host and step == crash_step:
        with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "crashed_at"), "w") as f:
            f.write(str(time.time()))
        # The reason, where SageMaker asks algorithms to write it: TF's own messages at exit
        # may fill the tail of stderr that the failure also quotes.
        with open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w") as f:
            f.write(f"{host} fails at step {step}")
        raise RuntimeError(f"{host} fails at step {step}")
    ids = next(iterator)
    seen += [int(i) for t in strategy.experimental_local_results(ids) for i in t]
    train_step(ids)
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "trained.json"), "w") as f:
    json.dump({"seen": seen, "w": float(w.numpy()), "b": float(b.numpy()),
               "workers": strategy.num_replicas_in_sync}, f)
"""


def _replay_sgd(seen: list[list[int]], batch: int) -> tuple[float, float]:
    """The script's training in numpy: each step, each worker's update on its own batch,
    averaged over the workers (the variables aggregate by MEAN)."""
    w = b = 0.0
    for step in range(len(seen[0]) // batch):
        updates = []
        for ids in seen:
            x = np.array(ids[step * batch : (step + 1) * batch]) / 100.0
            error = w * x + b - (2.0 * x + 1.0)
            updates.append((0.1 * np.mean(2 * error * x), 0.1 * np.mean(2 * error)))
        w -= float(np.mean([u[0] for u in updates]))
        b -= float(np.mean([u[1] for u in updates]))
    return w, b


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def uneven_shards(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Four objects whose ShardedByS3Key shards hold 60 records (algo-1) and 20 (algo-2)."""
    use_s3_endpoint(monkeypatch, s3_endpoint)
    bucket = boto3.resource("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="uneven")
    parts = [range(0, 30), range(30, 40), range(40, 70), range(70, 80)]
    for index, ids in enumerate(parts):
        bucket.put_object(Key=f"train/part-{index}", Body=examples(ids))
    yield "s3://uneven/train/"
    s3_client.cache_clear()


def _mwms_job(
    tmp_path: Path, source: str, args: list[str], stderr: TextIO | None = None, **options: Any
) -> JobResult:
    entry = tmp_path / "mwms.py"
    entry.write_text(_MWMS_SCRIPT)
    job = TrainingJob(
        entry,
        [Channel("train", source, distribution="ShardedByS3Key")],
        script_args=args,
        output_path=tmp_path / "out",
        job_name="mwms",
        instance_count=2,
        distribution=Distribution("multi_worker_mirrored_strategy"),
        **options,
    )
    return job.run(stderr=stderr, live=False)


@pytest.mark.slow
def test_mwms_workers_on_uneven_shards_train_in_sync_and_read_every_record(
    tmp_path: Path, uneven_shards: str
) -> None:
    # 12 steps of 5 records per epoch: one pass over algo-1's 60 records, three over algo-2's 20.
    stderr = io.StringIO()
    result = _mwms_job(tmp_path, uneven_shards, ["2", "12", "5"], stderr=stderr)
    assert result.exit_code == 0, result.failure
    # tf.data pulls for the next epoch while the scripts exit: that ends quietly, not with a
    # logged traceback per pull.
    assert "no new reads while the interpreter exits" not in stderr.getvalue()
    first, second = (recorded(result.job_dir, "trained.json", h) for h in ("algo-1", "algo-2"))
    assert first["workers"] == second["workers"] == 2
    # In sync: both hold the weights of every step's update averaged over the two workers.
    assert (first["w"], first["b"]) == (second["w"], second["b"])
    expected = _replay_sgd([first["seen"], second["seen"]], batch=5)
    assert (first["w"], first["b"]) == pytest.approx(expected, rel=1e-4)
    # Each host read its whole shard, pipe epoch after pipe epoch, nothing dropped or repeated
    # within an epoch; and the first epochs of the two hosts hold every record once.
    shard_1 = [*range(0, 30), *range(40, 70)]
    shard_2 = [*range(30, 40), *range(70, 80)]
    assert first["seen"] == shard_1 * 2
    assert second["seen"] == shard_2 * 6
    assert sorted(first["seen"][:60] + second["seen"][:20]) == list(range(80))
    served = {s.host: s.epochs_served for s in result.channels}
    assert served["algo-1"] >= 2 and served["algo-2"] >= 6


@pytest.mark.slow
def test_a_host_failing_mid_training_ends_the_job_promptly_naming_it(
    tmp_path: Path, uneven_shards: str
) -> None:
    result = _mwms_job(
        tmp_path,
        uneven_shards,
        ["2", "12", "5"],
        environment={"CRASH_HOST": "algo-2", "CRASH_STEP": "3"},
        stop_grace=60,
    )
    ended = time.time()
    assert result.exit_code == 1
    assert result.failure is not None
    assert result.failure.startswith("AlgorithmError: mwms.py on algo-2 exited with code 1\n")
    assert result.failure.splitlines()[1] == "algo-2 fails at step 3"
    crashed = float((result.job_dir / "algo-2" / "output" / "data" / "crashed_at").read_text())
    # algo-1, left waiting in a collective, was ended well within the stop grace.
    assert ended - crashed < 30
    assert not (result.job_dir / "algo-1" / "output" / "data" / "trained.json").exists()
    config = result.job_dir / "algo-1" / "input" / "config" / "hyperparameters.json"
    switch = "sagemaker_multi_worker_mirrored_strategy_enabled"
    assert json.loads(config.read_text()) == {switch: "true"}


@pytest.mark.slow
def test_the_mwms_example_trains_on_two_hosts(tmp_path: Path) -> None:
    from pipemode.generate import generate

    generate(tmp_path / "data" / "train", 2560, files=4, seed=0)
    generate(tmp_path / "data" / "eval", 640, files=1, seed=1)
    example = Path(__file__).parents[1] / "examples" / "mwms_custom_loop.py"
    job = TrainingJob(
        example,
        [
            Channel("train", str(tmp_path / "data" / "train"), distribution="ShardedByS3Key"),
            Channel("eval", str(tmp_path / "data" / "eval")),
        ],
        hyperparameters={"epochs": "2", "steps": "10", "eval-steps": "10"},
        output_path=tmp_path / "out",
        job_name="example",
        instance_count=2,
        distribution=Distribution("multi_worker_mirrored_strategy"),
    )
    result = job.run(live=False)
    assert result.exit_code == 0, result.failure
    metrics = recorded(result.job_dir, "metrics.json")
    assert metrics["workers"] == 2 and metrics["train_steps"] == 20
    assert metrics["eval_accuracy"] > 0.95
    with tarfile.open(result.model_data) as tar:
        assert tar.getnames() == ["classifier.weights.h5"]


# Keras `fit` under MultiWorkerMirroredStrategy with Keras 2: tf_keras (TF_USE_LEGACY_KERAS=1) on
# TF 2.16+, where Keras 3's fails upstream (keras-team/keras#20585), and the Keras built into TF
# 2.13-2.15. repeat() and fixed steps, on the uneven shards.
_FIT_SCRIPT = """
import json, os
import tensorflow as tf
from pipemode import PipeModeDataset

keras = tf.keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
features = {"id": tf.io.FixedLenFeature([], tf.int64)}

def example(record):
    x = tf.cast(tf.io.parse_single_example(record, features)["id"], tf.float32) / 100.0
    return tf.reshape(x, [1]), 2.0 * x + 1.0

data = PipeModeDataset("train").repeat().map(example).batch(10, drop_remainder=True)
with strategy.scope():
    model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.2), loss="mse")
history = model.fit(data, epochs=3, steps_per_epoch=12, verbose=0)
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "fit.json"), "w") as f:
    json.dump({"keras": type(model).__module__, "loss": history.history["loss"],
               "weights": [w.tolist() for w in model.get_weights()]}, f)
"""


@pytest.mark.slow
def test_keras_2_fit_under_mwms_trains_in_sync(tmp_path: Path, uneven_shards: str) -> None:
    if not tf.__version__.startswith(("2.13.", "2.14.", "2.15.")):
        pytest.importorskip("tf_keras")
    entry = tmp_path / "fit.py"
    entry.write_text(_FIT_SCRIPT)
    job = TrainingJob(
        entry,
        [Channel("train", uneven_shards, distribution="ShardedByS3Key")],
        output_path=tmp_path / "out",
        job_name="fit",
        instance_count=2,
        environment={"TF_USE_LEGACY_KERAS": "1"},
        distribution=Distribution("multi_worker_mirrored_strategy"),
    )
    result = job.run(live=False)
    assert result.exit_code == 0, result.failure
    first, second = (recorded(result.job_dir, "fit.json", h) for h in ("algo-1", "algo-2"))
    # Keras 2's models live in `engine` (keras.src.engine.sequential, tf_keras.src.engine...),
    # Keras 3's in `models`.
    assert ".engine." in first["keras"], first["keras"]
    assert first["weights"] == second["weights"]
    assert len(first["loss"]) == 3 and first["loss"][-1] < first["loss"][0] / 4
