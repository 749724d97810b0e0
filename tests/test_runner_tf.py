"""The tutorial's Keras scripts trained for real through the local runner, and their models."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from pipemode import FixedLenFeature, RecordReader, decode_examples
from pipemode.examples import TUTORIAL, TUTORIAL_DENSE
from pipemode.generate import generate
from pipemode.runner import Channel, JobResult, TrainingJob

pytestmark = [pytest.mark.tf, pytest.mark.slow]


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tutorial-data")
    generate(root / "train", 3000, files=3, seed=0)
    generate(root / "eval", 640, files=1, seed=1)
    return {"train": root / "train", "eval": root / "eval"}


def train(tmp_path: Path, script: Path, channels: dict[str, Path], **options) -> JobResult:  # type: ignore[no-untyped-def]
    job = TrainingJob(
        script,
        [
            Channel("train", str(channels["train"]), distribution="ShardedByS3Key"),
            Channel("eval", str(channels["eval"])),
        ],
        hyperparameters={"steps": "30", "epochs": "2"},
        output_path=tmp_path / "out",
        job_name="tutorial",
        **options,
    )
    result = job.run(live=False)
    assert result.exit_code == 0, result.failure
    return result


def serve_eval_data(tmp_path: Path, result: JobResult, channels: dict[str, Path]) -> float:
    """Loads the exported SavedModel from model.tar.gz and scores the eval records with it."""
    tf = pytest.importorskip("tensorflow")
    with tarfile.open(result.model_data) as tar:
        assert "1/saved_model.pb" in tar.getnames()
        tar.extractall(tmp_path / "model", filter="data")
    saved = tmp_path / "model" / "1" / "saved_model.pb"
    # The model was exported alone: nothing of the Pipe Mode input pipeline came along.
    graph = saved.read_bytes()
    for op in (b"PyFunc", b"FromGenerator", b"GeneratorDataset", b"EagerPyFunc"):
        assert op not in graph
    records = [r for p in sorted(channels["eval"].iterdir()) for r in RecordReader(p)]
    columns = decode_examples(
        records,
        {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")},
        decode_raw={"data": "float64"},
    )
    model = tf.saved_model.load(str(tmp_path / "model" / "1"))
    logits = model.serve(tf.constant(columns["data"])).numpy()
    return float(np.mean(np.argmax(logits, axis=1) == columns["labels"]))


def test_the_tutorial_script_trains_evaluates_and_exports(
    tmp_path: Path, channels: dict[str, Path]
) -> None:
    import json

    result = train(tmp_path, TUTORIAL, channels)
    metrics = json.loads((result.hosts[0].output_data_dir / "metrics.json").read_text())
    assert metrics["train_steps"] == 60
    assert metrics["eval_accuracy"] > 0.95
    assert serve_eval_data(tmp_path, result, channels) == pytest.approx(
        metrics["eval_accuracy"], abs=0.01
    )
    by_channel = {s.channel: s for s in result.channels}
    assert by_channel["train"].epochs_served >= 2  # 60 steps of 64 span two 3000-record epochs
    assert by_channel["eval"].epochs_served >= 1


def test_the_dense_variant_on_two_workers_exports_on_the_first_only(
    tmp_path: Path, channels: dict[str, Path]
) -> None:
    result = train(tmp_path, TUTORIAL_DENSE, channels, instance_count=2)
    first, second = result.hosts
    assert (first.model_dir / "1" / "saved_model.pb").is_file()
    assert list(second.model_dir.iterdir()) == []
    assert serve_eval_data(tmp_path, result, channels) > 0.95


def test_the_tutorial_failing_on_a_truncated_channel_exits(tmp_path: Path) -> None:
    # The tutorial's pipeline (prefetch, per-record map, batch) under repeat(): tf.data's threads
    # go on pulling the next epoch after the error, and the script's exit used to hang for good
    # (3 runs in 4 here) while TF's iterator destructor waited for a thread Python had stopped.
    train = tmp_path / "train"
    generate(train, 2000, files=1, seed=0)
    (part,) = train.iterdir()
    os.truncate(part, part.stat().st_size // 2 + 37)  # mid-record
    generate(tmp_path / "eval", 64, files=1, seed=1)
    command = [sys.executable, "-m", "pipemode", "train", "--channel", f"train={train}"]
    command += ["--channel", f"eval={tmp_path / 'eval'}", "--output-path", str(tmp_path / "out")]
    command += ["--stop-grace", "5"]
    command += [str(TUTORIAL), "--steps", "50", "--epochs", "3"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for _ in range(2):
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        ) as job:
            try:
                output, _ = job.communicate(timeout=150)
            except subprocess.TimeoutExpired:
                job.terminate()  # the runner ends the hung script: SIGTERM, SIGKILL after 5 s
                output, _ = job.communicate(timeout=60)
        assert job.returncode == 1, output.decode()[-3000:]
        assert b"CorruptRecordError" in output
        assert b"byte offset 8240000" in output
