"""`pipemode generate`: the tutorial's synthetic data, record for record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipemode import FixedLenFeature, RecordReader, decode_examples
from pipemode.cli import main
from pipemode.generate import generate

FEATURES = {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")}


def records_of(paths: list[Path], record_format: str = "RecordIO") -> list[bytes]:
    return [record for path in paths for record in RecordReader(path, record_format)]


def test_records_follow_the_tutorial(tmp_path: Path) -> None:
    made = generate(tmp_path, 600, dimension=1024, classes=3, files=1, seed=4)
    columns = decode_examples(records_of(made.files), FEATURES, decode_raw={"data": "float64"})
    labels, data = columns["labels"], columns["data"]
    assert labels.tolist() == [i % 3 for i in range(600)]
    assert data.shape == (600, 1024)
    # Class c is drawn around int(c - classes / 2): -1, 0 and 0 for three classes.
    for label, mean in ((0, -1.0), (1, 0.0), (2, 0.0)):
        rows = data[labels == label]
        assert abs(rows.mean() - mean) < 0.01
        assert abs(rows.std() - 1.0) < 0.01


def test_record_sizes_match_the_tutorial_data(tmp_path: Path) -> None:
    # An Example of 1024 float64 and a small label is 8,230 bytes, 8,240 as a RecordIO record
    # and 8,246 as a TFRecord record.
    recordio = generate(tmp_path / "r", 10, files=1)
    tfrecord = generate(tmp_path / "t", 10, record_format="TFRecord", files=1)
    assert recordio.bytes == tfrecord.bytes == 10 * 8230
    assert recordio.files[0].stat().st_size == 10 * 8240
    assert tfrecord.files[0].stat().st_size == 10 * 8246
    assert records_of(recordio.files) == records_of(tfrecord.files, "TFRecord")


def test_data_depends_on_the_seed_only_not_on_the_file_count(tmp_path: Path) -> None:
    one = generate(tmp_path / "one", 50, dimension=16, files=1, seed=9)
    four = generate(tmp_path / "four", 50, dimension=16, files=4, seed=9)
    other = generate(tmp_path / "other", 50, dimension=16, files=1, seed=10)
    assert [p.name for p in four.files] == [f"part-0000{i}.recordio" for i in range(4)]
    assert records_of(one.files) == records_of(four.files)
    assert records_of(one.files) != records_of(other.files)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="record_format"):
        generate(tmp_path, 1, record_format="TextLine")
    with pytest.raises(ValueError, match="files"):
        generate(tmp_path, 1, files=0)


@pytest.mark.tf
def test_tensorflow_parses_the_records_as_the_tutorial_script_does(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    made = generate(tmp_path, 8, record_format="TFRecord", files=2, seed=1)
    features = {
        "data": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.FixedLenFeature([], tf.int64),
    }
    dataset = tf.data.TFRecordDataset([str(p) for p in made.files])
    for i, record in enumerate(dataset):
        parsed = tf.io.parse_single_example(record, features)
        data = tf.io.decode_raw(parsed["data"], tf.float64).numpy()
        assert data.shape == (1024,)
        assert int(parsed["labels"]) == i % 2
        assert np.isfinite(data).all()


def test_the_cli_writes_the_files_and_reports_the_speed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train"
    code = main(
        ["generate", str(out), "--records", "100", "--dimension", "32", "--classes", "4",
         "--format", "TFRecord", "--files", "2", "--seed", "3"]
    )  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.tfrecord", "part-00001.tfrecord"]
    assert len(records_of(sorted(out.iterdir()), "TFRecord")) == 100
    assert "100 TFRecord records" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("--files", "0", "must be at least 1, not 0"),
        ("--dimension", "-2", "must be at least 1, not -2"),
        ("--classes", "0", "must be at least 1, not 0"),
        ("--records", "-1", "must be at least 0, not -1"),
        ("--records", "ten", "expected an integer, got 'ten'"),
    ],
)
def test_the_cli_refuses_bad_counts_with_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, complaint: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["generate", str(tmp_path / "out"), option, value])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.splitlines()[-1] == f"pipemode generate: error: argument {option}: {complaint}"
    assert "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_the_cli_writes_an_empty_data_set_when_asked(tmp_path: Path) -> None:
    assert main(["generate", str(tmp_path), "--records", "0"]) == 0
    assert records_of([tmp_path / "part-00000.recordio"]) == []
