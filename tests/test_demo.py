"""`pipemode demo`, the README's main command, end to end on a small data set (the dense
variant of the script is trained in test_runner_tf.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def test_the_demo_trains_the_tutorial_and_reports_accuracy_and_throughput(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    command = [sys.executable, "-m", "pipemode", "demo", "--output-path", str(tmp_path),
               "--train-records", "2000", "--eval-records", "500", "--steps", "20",
               "--epochs", "2"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    accuracy = re.search(r"eval accuracy\s+([0-9.]+)", done.stdout)
    assert accuracy and float(accuracy.group(1)) > 0.95, done.stdout
    # 40 steps of 64 records read the 2000-record channel into its second epoch.
    served = re.search(r"train input\s+(\d+) epoch\(s\), [0-9.]+ MB at [0-9.]+ MB/s", done.stdout)
    assert served and int(served.group(1)) >= 2, done.stdout
    assert "generated train: 2000 records" in done.stderr
    (model,) = tmp_path.glob("pipemode-demo-*/output/model.tar.gz")
    assert model.stat().st_size > 0
