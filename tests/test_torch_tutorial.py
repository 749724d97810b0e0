"""The tutorial's PyTorch script trained through `pipemode train`, as a user runs it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from pipemode import FixedLenFeature, RecordReader, decode_examples
from pipemode.examples import TUTORIAL_TORCH
from pipemode.generate import generate

torch = pytest.importorskip("torch")
from pipemode.examples.tutorial_torch import linear_classifier, parse_args  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # The data of test_runner_tf.py's Keras runs, which reach an eval accuracy above 0.95.
    root = tmp_path_factory.mktemp("tutorial-data")
    generate(root / "train", 3000, files=3, seed=0)
    generate(root / "eval", 640, files=1, seed=1)
    return {"train": root / "train", "eval": root / "eval"}


def pipemode_train(tmp_path: Path, channels: dict[str, Path], *options: str) -> dict[str, float]:
    command = [sys.executable, "-m", "pipemode", "train", "--output-path", str(tmp_path)]
    command += ["--job-name", "tutorial-torch"]
    for name, source in channels.items():
        command += ["--channel", f"{name}={source}"]
    command += [str(TUTORIAL_TORCH), "--steps", "30", "--epochs", "2", *options]
    # One intra-op thread: this tiny model gains nothing from more on two shared cores, where
    # OpenMP threads waiting for each other cost more than the steps (DataLoader workers use
    # one thread anyway).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    # 60 steps of 64 span two 3000-record epochs.
    assert "channel train: 2 epoch(s) served" in job.stdout + job.stderr
    host = tmp_path / "tutorial-torch" / "algo-1"
    metrics: dict[str, float] = json.loads((host / "output" / "data" / "metrics.json").read_text())
    return metrics


def served_accuracy(tmp_path: Path, channels: dict[str, Path]) -> float:
    """Loads the weights from model.tar.gz into a new model and scores the eval records."""
    archive = tmp_path / "tutorial-torch" / "output" / "model.tar.gz"
    with tarfile.open(archive) as tar:
        member = tar.extractfile("model.pth")
        assert member is not None
        weights = torch.load(io.BytesIO(member.read()), weights_only=True)
    model = linear_classifier(parse_args([]))
    model.load_state_dict(weights)
    model.eval()
    records = [r for path in sorted(channels["eval"].iterdir()) for r in RecordReader(path)]
    features = {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")}
    columns = decode_examples(records, features, decode_raw={"data": "float64"})
    with torch.no_grad():
        logits = model(torch.from_numpy(columns["data"])).numpy()
    return float(np.mean(np.argmax(logits, axis=1) == columns["labels"]))


@pytest.mark.parametrize(
    "options",
    [[], ["--per-record", "--workers", "2"]],
    ids=["dense batches", "per-record transform in two workers"],
)
def test_the_torch_tutorial_trains_as_well_as_the_keras_one(
    tmp_path: Path, channels: dict[str, Path], options: list[str]
) -> None:
    metrics = pipemode_train(tmp_path, channels, *options)
    assert metrics["train_steps"] == 60
    assert metrics["eval_accuracy"] > 0.95  # test_runner_tf.py's bar for the Keras script
    assert served_accuracy(tmp_path, channels) == pytest.approx(metrics["eval_accuracy"])
