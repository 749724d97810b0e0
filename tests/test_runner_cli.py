"""`pipemode train` on the command line, and what the runner shows while a job runs."""

from __future__ import annotations

import importlib.metadata
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pipemode.cli import main
from pipemode.runner.feeder import ChannelStats
from pipemode.runner.progress import Progress
from runner_helpers import folder_of_files, recorded, script


def test_train_takes_an_input_data_config_and_hyperparameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = folder_of_files(tmp_path / "d", {f"f{i}": f"f{i} ".encode() for i in range(5)})
    config = tmp_path / "input.json"
    config.write_text(
        json.dumps(
            [
                {
                    "ChannelName": "train",
                    "InputMode": "Pipe",
                    "DataSource": {"S3DataSource": {"S3Uri": str(data)}},
                    "ShuffleConfig": {"Seed": 5},
                },
                {
                    "ChannelName": "static",
                    "InputMode": "File",
                    "DataSource": {"S3DataSource": {"S3Uri": str(data / "f0")}},
                },
            ]
        )
    )
    entry = script(
        tmp_path,
        """
        record("seen.json", {"train": read_epoch("train", 0).decode().split(),
                             "static": os.listdir(os.environ["SM_CHANNEL_STATIC"]),
                             "argv": sys.argv[1:]})
        print("hello from the script")
        """,
    )
    code = main(
        ["train", "--input-data-config", str(config), "--hyperparameter", "steps=7",
         "--output-path", str(tmp_path / "out"), "--job-name", "cli", str(entry), "--more"]
    )  # fmt: skip
    assert code == 0
    seen = recorded(tmp_path / "out" / "cli", "seen.json")
    assert sorted(seen["train"]) == [f"f{i}" for i in range(5)]
    assert seen["static"] == ["f0"]
    assert seen["argv"] == ["--steps", "7", "--more"]
    out, err = capsys.readouterr()
    assert "hello from the script" in out
    assert "pipemode: job cli completed" in err
    assert "channel train: 1 epoch(s) served" in err


def test_train_reports_bad_channels_and_returns_the_script_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = script(tmp_path, "sys.exit(4)\n")
    assert main(["train", "--channel", "../x=/tmp", str(entry)]) == 2
    assert "invalid channel name '../x'" in capsys.readouterr().err
    assert main(["train", "--channel", f"t={tmp_path / 'missing'}", str(entry)]) == 2
    assert "neither a file, a folder nor s3://" in capsys.readouterr().err
    out = str(tmp_path / "out")
    assert main(["train", "--output-path", out, str(entry)]) == 4


def test_the_live_line_shows_each_channel_under_the_scripts_output() -> None:
    train = ChannelStats("train", "algo-1", epoch=2, bytes=3_500_000, busy_seconds=0.5)
    terminal = io.StringIO()
    with Progress([train, ChannelStats("eval", "algo-1")], terminal, live=True) as progress:
        progress.emit(terminal, "epoch 1/3\n")
    shown = terminal.getvalue()
    assert shown.startswith("epoch 1/3\n")
    assert "train: epoch 2, 3.5 MB, 7.0 MB/s | eval: epoch 0, 0 B" in shown
    assert shown.endswith("\r\x1b[K")  # the live line is cleared when the job ends
    quiet = io.StringIO()
    with Progress([train], quiet, live=False) as progress:
        progress.emit(quiet, "line\n")
    assert quiet.getvalue() == "line\n"


def test_the_demo_says_when_tensorflow_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "tensorflow" else find_spec(name)
    )
    assert main(["demo"]) == 2
    assert "pip install 'pipemode[tensorflow]'" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--train-records", "--eval-records", "--epochs", "--steps"])
def test_the_demo_refuses_counts_below_one_with_a_usage_error(
    capsys: pytest.CaptureFixture[str], option: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", option, "0"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert (
        error.splitlines()[-1]
        == f"pipemode demo: error: argument {option}: must be at least 1, not 0"
    )
    assert "Traceback" not in error


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"pipemode {importlib.metadata.version('pipemode')}\n"


def test_train_help_shows_the_defaults_and_explains_the_modes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no line wrapped inside a word
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: pipemode-output)" in shown
    assert "--input-mode {Pipe,File,FastFile}" in shown and "(default: Pipe)" in shown
    assert 'FastFile does the same here and is written "File" in inputdataconfig.json' in shown
    assert "--stop-grace SECONDS" in shown and "(default: 120.0)" in shown
    assert "(default: None)" not in shown


def test_demo_help_says_what_the_demo_does(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "The SageMaker Pipe Mode tutorial on this machine" in shown
    assert "--train-records TRAIN_RECORDS generated (default: 20000)" in shown


def test_train_without_a_script_says_the_script_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train"])
    assert exited.value.code == 2
    usage, error = capsys.readouterr().err.splitlines()[-2:]
    assert usage.startswith("usage: ") and usage.endswith(
        " train [options] ENTRY_POINT [SCRIPT_ARGS ...]"
    )
    assert error.endswith("train: error: the training script ENTRY_POINT is required")


@pytest.mark.parametrize("grace", ["-1", "soon", "nan"])
def test_a_bad_stop_grace_is_a_usage_error(capsys: pytest.CaptureFixture[str], grace: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["train", "--stop-grace", grace, "train.py"])
    assert exited.value.code == 2
    assert "argument --stop-grace: " in capsys.readouterr().err


def test_the_default_output_folder_is_ignored_by_git() -> None:
    root = Path(__file__).resolve().parent.parent
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(
        ["git", "-C", str(root), "check-ignore", "-q", "pipemode-output/job/output/model.tar.gz"]
    )
    assert ignored.returncode == 0
