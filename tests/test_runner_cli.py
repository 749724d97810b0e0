"""`pipemode train` on the command line, and what the runner shows while a job runs."""

from __future__ import annotations

import io
import json
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
