"""The local Pipe Mode runner, driven with small entry points that read the FIFOs directly."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from pipemode.runner import Channel, JobConfigError
from pipemode.runner import feeder as feeder_module
from pipemode.runner.channels import parse_channel_arg, parse_input_data_config
from pipemode.runner.estimator import Estimator, ShuffleConfig, TrainingFailedError, TrainingInput
from pipemode.runner.feeder import ChannelFeeder
from pipemode.runner.job import _file_mode_name, _file_mode_path
from pipemode.runner.sources import DataObject, LocalObject, S3Object, epoch_objects, resolve
from runner_helpers import fifos_under, folder_of_files, recorded, run, script


def test_serves_a_local_folder_epoch_after_epoch_with_the_sagemaker_layout(tmp_path: Path) -> None:
    data = folder_of_files(
        tmp_path / "train", {"b.rec": b"B" * 300_000, "a.rec": b"A" * 5, "sub/c.rec": b"C"}
    )
    entry = script(
        tmp_path,
        """
        record("epochs.json", [read_epoch("train", e).decode()[:8] for e in range(3)])
        record("eval.json", read_epoch("eval", 0).decode())
        record("argv.json", sys.argv[1:])
        config = os.environ["SM_INPUT_CONFIG_DIR"]
        record("config.json", {n: json.load(open(os.path.join(config, n + ".json")))
                               for n in ("hyperparameters", "inputdataconfig", "resourceconfig")})
        extra = ("SAGEMAKER_BASE_DIR", "TRAINING_JOB_NAME")
        record("env.json", {k: v for k, v in os.environ.items() if k[:3] == "SM_" or k in extra})
        open(os.path.join(os.environ["SM_MODEL_DIR"], "weights.bin"), "wb").write(b"model")
        """,
    )
    (tmp_path / "eval.txt").write_bytes(b"evaluation")
    result = run(
        tmp_path,
        entry,
        [Channel("train", str(data)), Channel("eval", str(tmp_path / "eval.txt"))],
        hyperparameters={"steps": "10", "learning-rate": "0.5"},
        script_args=["--extra"],
    )
    assert result.exit_code == 0, result.failure
    out = result.job_dir
    # A folder is served like an S3 prefix: its files in key order, concatenated.
    assert recorded(out, "epochs.json") == ["AAAAABBB"] * 3
    assert recorded(out, "eval.json") == "evaluation"
    assert recorded(out, "argv.json") == ["--steps", "10", "--learning-rate", "0.5", "--extra"]
    config = recorded(out, "config.json")
    assert config["hyperparameters"] == {"steps": "10", "learning-rate": "0.5"}
    assert config["inputdataconfig"]["train"] == {
        "TrainingInputMode": "Pipe",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
    }
    assert config["resourceconfig"]["current_host"] == "algo-1"
    assert config["resourceconfig"]["hosts"] == ["algo-1"]
    env = recorded(out, "env.json")
    host = out / "algo-1"
    assert env["SAGEMAKER_BASE_DIR"] == str(host)
    assert env["TRAINING_JOB_NAME"] == "job"
    assert json.loads(env["SM_CHANNELS"]) == ["eval", "train"]
    assert env["SM_CHANNEL_TRAIN"] == str(host / "input" / "data" / "train")
    assert env["SM_MODEL_DIR"] == str(host / "model")
    assert env["SM_HP_STEPS"] == "10"
    assert json.loads(env["SM_HPS"]) == {"steps": "10", "learning-rate": "0.5"}
    assert json.loads(env["SM_TRAINING_ENV"])["current_host"] == "algo-1"
    assert json.loads(env["SM_INPUT_DATA_CONFIG"])["eval"]["TrainingInputMode"] == "Pipe"
    # At the end: FIFOs gone, model and output packed where SageMaker would upload them.
    assert fifos_under(out) == []
    assert result.model_data == out / "output" / "model.tar.gz"
    with tarfile.open(result.model_data) as tar:
        assert tar.getnames() == ["weights.bin"]
        assert tar.extractfile("weights.bin").read() == b"model"  # type: ignore[union-attr]
    with tarfile.open(result.output_data) as tar:
        assert "epochs.json" in tar.getnames()
    train = next(s for s in result.channels if s.channel == "train")
    assert train.epochs_served >= 3
    assert train.bytes >= 3 * 300_006


def test_the_fifo_folder_is_private(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"x": b"x"})
    entry = script(
        tmp_path,
        """
        record("mode.json", oct(os.stat(DATA).st_mode & 0o777))
        record("fifo.json", oct(os.stat(os.path.join(DATA, "train_0")).st_mode & 0o777))
        """,
    )
    result = run(tmp_path, entry, [Channel("train", str(data))])
    assert recorded(result.job_dir, "mode.json") == "0o700"
    assert recorded(result.job_dir, "fifo.json") == "0o600"


def test_a_reader_that_closes_early_gets_the_next_epoch_whole(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"big": os.urandom(8 << 20)})
    entry = script(
        tmp_path,
        """
        first = read_epoch("train", 0, 10)
        second = read_epoch("train", 1)
        record("sizes.json", [len(first), len(second)])
        """,
    )
    result = run(tmp_path, entry, [Channel("train", str(data))])
    assert result.exit_code == 0
    assert recorded(result.job_dir, "sizes.json") == [10, 8 << 20]
    assert result.channels[0].epochs_served >= 2


def test_a_crashing_script_fails_the_job_and_leaves_no_fifo(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"big": b"\0" * (4 << 20)})
    entry = script(
        tmp_path,
        """
        with open(os.path.join(DATA, "train_0"), "rb") as f:
            f.read(1000)
            raise ValueError("bad learning rate")
        """,
    )
    started = time.monotonic()
    result = run(tmp_path, entry, [Channel("train", str(data))])
    assert time.monotonic() - started < 30
    assert result.exit_code == 1
    failure = (result.job_dir / "algo-1" / "output" / "failure").read_text()
    assert "exited with code 1" in failure
    assert "ValueError: bad learning rate" in failure
    assert result.failure == failure
    assert fifos_under(result.job_dir) == []


def test_a_script_that_never_reads_its_channels_ends_promptly(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"x": b"x" * 100})
    entry = script(tmp_path, "print('not reading today')\n")
    started = time.monotonic()
    result = run(tmp_path, entry, [Channel("train", str(data)), Channel("eval", str(data))])
    assert time.monotonic() - started < 10
    assert result.exit_code == 0
    assert [s.epochs_served for s in result.channels] == [0, 0]
    assert fifos_under(result.job_dir) == []


def test_a_script_that_opens_but_stops_reading_does_not_block_the_end(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"x": b"x" * (16 << 20)})
    # The pipe fills up and the feeder blocks in write(); the script's exit must release it.
    entry = script(tmp_path, "f = open(os.path.join(DATA, 'train_0'), 'rb'); f.read(1)\n")
    started = time.monotonic()
    result = run(tmp_path, entry, [Channel("train", str(data))])
    assert time.monotonic() - started < 10
    assert result.exit_code == 0


def _order_script(tmp_path: Path, epochs: int) -> Path:
    return script(
        tmp_path,
        f"""
        record("order.json", [read_epoch("train", e).decode().split() for e in range({epochs})])
        """,
    )


def test_shuffle_is_deterministic_for_a_seed_and_differs_across_epochs(tmp_path: Path) -> None:
    names = [f"f{i:02d}" for i in range(20)]
    data = folder_of_files(tmp_path / "d", {n: f"{n} ".encode() for n in names})
    entry = _order_script(tmp_path, 3)

    def orders(job: str, seed: int) -> list[list[str]]:
        channel = Channel("train", str(data), shuffle_seed=seed)
        result = run(tmp_path, entry, [channel], job_name=job)
        assert result.exit_code == 0
        return recorded(result.job_dir, "order.json")

    first = orders("a", 7)
    assert orders("b", 7) == first
    assert all(sorted(epoch) == names for epoch in first)
    assert len({tuple(epoch) for epoch in first}) == 3
    assert orders("c", 8) != first
    # Without a seed the order is the key order, every epoch.
    result = run(tmp_path, entry, [Channel("train", str(data))], job_name="d")
    assert recorded(result.job_dir, "order.json") == [names] * 3


def test_a_negative_shuffle_seed_shuffles_like_any_other(tmp_path: Path) -> None:
    objects = [LocalObject(tmp_path / f"f{i}", f"f{i}") for i in range(20)]
    channel = Channel("train", str(tmp_path), shuffle_seed=-5)
    first = epoch_objects(objects, channel, 0, 0, 1)
    assert epoch_objects(objects, channel, 0, 0, 1) == first
    assert sorted(first, key=lambda o: o.key) == sorted(objects, key=lambda o: o.key)
    assert first != objects


def test_multiple_workers_each_get_a_disjoint_shard(tmp_path: Path) -> None:
    names = [f"f{i:02d}" for i in range(10)]
    data = folder_of_files(tmp_path / "d", {n: f"{n} ".encode() for n in names})
    entry = script(
        tmp_path,
        """
        record("seen.json", {"host": os.environ["SM_CURRENT_HOST"],
                             "hosts": json.loads(os.environ["SM_HOSTS"]),
                             "train": read_epoch("train", 0).decode().split(),
                             "full": read_epoch("full", 0).decode().split()})
        """,
    )
    channels = [
        Channel("train", str(data), distribution="ShardedByS3Key"),
        Channel("full", str(data)),
    ]
    result = run(tmp_path, entry, channels, instance_count=3)
    assert result.exit_code == 0, result.failure
    seen = [recorded(result.job_dir, "seen.json", f"algo-{i}") for i in (1, 2, 3)]
    assert [s["host"] for s in seen] == ["algo-1", "algo-2", "algo-3"]
    assert all(s["hosts"] == ["algo-1", "algo-2", "algo-3"] for s in seen)
    shards = [s["train"] for s in seen]
    assert sorted(name for shard in shards for name in shard) == names
    assert [len(s) for s in shards] == [4, 3, 3]
    assert all(s["full"] == names for s in seen)


def test_file_mode_channels_are_materialised(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"a": b"1", "sub/b": b"22"})
    entry = script(
        tmp_path,
        """
        root = os.environ["SM_CHANNEL_TRAIN"]
        record("files.json", sorted(
            (os.path.relpath(os.path.join(d, f), root), open(os.path.join(d, f)).read())
            for d, _, fs in os.walk(root) for f in fs))
        """,
    )
    result = run(tmp_path, entry, [Channel("train", str(data), input_mode="File")])
    assert recorded(result.job_dir, "files.json") == [["a", "1"], ["sub/b", "22"]]
    assert not (result.job_dir / "algo-1" / "input" / "data").exists()


def test_gzip_objects_are_gunzipped_while_streamed(tmp_path: Path) -> None:
    payload = os.urandom(3 << 20)
    data = folder_of_files(
        tmp_path / "d",
        {"a.gz": gzip.compress(payload[:1000]), "b.gz": gzip.compress(payload[1000:])},
    )
    entry = script(tmp_path, "record('ok.json', read_epoch('train', 0) == ORIGINAL)\n")
    entry.write_text(
        f"ORIGINAL = open({str(tmp_path / 'raw')!r}, 'rb').read()\n" + entry.read_text()
    )
    (tmp_path / "raw").write_bytes(payload)
    result = run(tmp_path, entry, [Channel("train", str(data), compression="Gzip")])
    assert result.exit_code == 0, result.failure
    assert recorded(result.job_dir, "ok.json") is True


def test_a_channel_that_cannot_be_served_fails_the_job(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"broken.gz": b"this is not gzip"})
    entry = script(tmp_path, "read_epoch('train', 0); import time; time.sleep(60)\n")
    started = time.monotonic()
    result = run(tmp_path, entry, [Channel("train", str(data), compression="Gzip")])
    assert time.monotonic() - started < 30
    assert result.exit_code != 0
    assert "broken.gz" in (result.failure or "")
    assert "channel train" in (result.failure or "")


_READ_ONE_EPOCH = """
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
with open(sys.argv[1], "rb") as fifo:
    print(len(fifo.read()))
"""


def test_a_feeder_that_fails_holds_the_epoch_open_until_it_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_objects(*args: object) -> list[DataObject]:
        raise RuntimeError("listing failed")

    monkeypatch.setattr(feeder_module, "epoch_stream", no_objects)
    data = folder_of_files(tmp_path / "d", {"x": b"x" * 1000})
    errors: list[BaseException] = []
    feeder = ChannelFeeder(
        Channel("train", str(data)),
        [LocalObject(data / "x", "x")],
        tmp_path,
        "algo-1",
        on_error=lambda _, error: errors.append(error),
    )
    feeder.start()
    reader = subprocess.Popen(
        [sys.executable, "-c", _READ_ONE_EPOCH, str(tmp_path / "train_0")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [str(e) for e in errors] == ["listing failed"]
        assert feeder.stats.error == "listing failed"
        # A clean end of the FIFO would pass for a complete (empty) epoch: the reader waits, until
        # the job, failed by the error, stops the feeder.
        with pytest.raises(subprocess.TimeoutExpired):
            reader.wait(0.5)
    finally:
        feeder.stop()
        assert feeder.join(10)
        out, _ = reader.communicate(timeout=30)
    assert out == "0\n"
    assert feeder.stats.epochs_served == 0


def test_local_files_are_listed_in_the_byte_order_of_their_names(tmp_path: Path) -> None:
    names = [b"B", b"a", b"sub/c", "\u00e9".encode(), b"\xff-not-utf-8", b"z"]
    for name in names:
        path = os.path.join(os.fsencode(tmp_path), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb"):
            pass
    objects = resolve(Channel("train", str(tmp_path)))
    assert [os.fsencode(obj.key) for obj in objects] == sorted(names)


@pytest.mark.parametrize("key", ["absolute", "../src.bin"])
def test_file_mode_keys_that_would_leave_the_channel_folder_are_refused(
    tmp_path: Path, key: str
) -> None:
    source = tmp_path / "src.bin"
    source.write_bytes(b"precious")
    key = str(source) if key == "absolute" else key
    manifest = tmp_path / "manifests" / "train.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps([{"prefix": ""}, key]))
    channel = Channel("train", str(manifest), input_mode="File", s3_data_type="ManifestFile")
    with pytest.raises(
        JobConfigError, match=rf"channel 'train': object key {re.escape(repr(key))}"
    ):
        run(tmp_path, script(tmp_path, "pass\n"), [channel])
    assert source.read_bytes() == b"precious"
    assert not (tmp_path / "out" / "job").exists()  # refused before anything was made


@pytest.mark.parametrize("key", ["", ".", "a/./..", "/etc/passwd", "a/../../b"])
def test_file_mode_names_are_checked_for_s3_keys_too(key: str) -> None:
    with pytest.raises(JobConfigError, match=r"empty, absolute or has a '\.\.' part"):
        _file_mode_name("train", S3Object("bucket", f"prefix/{key}", key))


def test_a_file_mode_path_through_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "train"
    target.mkdir()
    (target / "link").symlink_to(tmp_path)
    obj = LocalObject(tmp_path / "x", "link/x")
    with pytest.raises(JobConfigError, match="outside the channel's folder"):
        _file_mode_path(target, "train", obj)
    assert _file_mode_path(target, "train", LocalObject(tmp_path / "x", "sub/x")) == (
        target / "sub" / "x"
    )


@pytest.mark.parametrize("name", ["../up", "a/b", "..", ".", "", "x" * 65, "sp ace"])
def test_channel_names_that_could_escape_the_data_folder_are_refused(name: str) -> None:
    with pytest.raises(JobConfigError, match="invalid channel name"):
        Channel(name, "somewhere")


def test_bad_options_are_refused_with_their_name() -> None:
    with pytest.raises(JobConfigError, match="RecordWrapperType"):
        Channel("train", "x", record_wrapping="protobuf")
    with pytest.raises(JobConfigError, match="Pipe mode only"):
        Channel("train", "x", input_mode="File", compression="Gzip")
    with pytest.raises(JobConfigError, match="NAME=SOURCE"):
        parse_channel_arg("train")


def test_input_data_config_uses_the_api_names_and_writes_the_container_names() -> None:
    api = {
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "InputMode": "Pipe",
                "DataSource": {
                    "S3DataSource": {
                        "S3Uri": "s3://bucket/train/",
                        "S3DataType": "ManifestFile",
                        "S3DataDistributionType": "ShardedByS3Key",
                    }
                },
                "RecordWrapperType": "RecordIO",
                "CompressionType": "Gzip",
                "ShuffleConfig": {"Seed": 42},
                "ContentType": "application/x-recordio",
            },
            {"ChannelName": "eval", "DataSource": {"S3DataSource": {"S3Uri": "/data/eval"}}},
        ]
    }
    train, evaluation = parse_input_data_config(api, default_input_mode="File")
    assert (train.s3_data_type, train.distribution, train.compression) == (
        "ManifestFile",
        "ShardedByS3Key",
        "Gzip",
    )
    assert train.shuffle_seed == 42
    assert train.container_config() == {
        "TrainingInputMode": "Pipe",
        "S3DistributionType": "ShardedByS3Key",
        "RecordWrapperType": "RecordIO",
        "ContentType": "application/x-recordio",
    }
    assert evaluation.input_mode == "File"
    with pytest.raises(JobConfigError, match="S3Uri"):
        parse_input_data_config([{"ChannelName": "x"}])


def test_a_job_name_is_never_reused(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"x": b"x"})
    entry = script(tmp_path, "pass\n")
    run(tmp_path, entry, [Channel("train", str(data))])
    with pytest.raises(JobConfigError, match="exists"):
        run(tmp_path, entry, [Channel("train", str(data))])


def test_estimator_fit_mirrors_the_sdk(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {f"f{i}": f"f{i} ".encode() for i in range(6)})
    entry = script(
        tmp_path,
        """
        record("seen.json", {"train": read_epoch("train", 0).decode().split(),
                             "eval": read_epoch("eval", 0).decode().split(),
                             "argv": sys.argv[1:]})
        """,
    )
    estimator = Estimator(
        entry,
        hyperparameters={"steps": 5, "verbose": True, "name": "x"},
        output_path=tmp_path / "out",
        base_job_name="tutorial",
    )
    result = estimator.fit(
        {
            "train": TrainingInput(str(data), shuffle_config=ShuffleConfig(3)),
            "eval": data,
        },
        live=False,
    )
    assert result.job_name.startswith("tutorial-")
    assert estimator.model_data == result.model_data
    seen = recorded(result.job_dir, "seen.json")
    assert sorted(seen["train"]) == seen["eval"] == [f"f{i}" for i in range(6)]
    assert seen["train"] != seen["eval"]
    assert seen["argv"] == ["--steps", "5", "--verbose", "true", "--name", "x"]

    failing = Estimator(script(tmp_path, "sys.exit(3)\n", "fail.py"), output_path=tmp_path / "o")
    with pytest.raises(TrainingFailedError, match="exit code 3") as failed:
        failing.fit(str(data), live=False)
    assert failed.value.result.exit_code == 3


def test_a_wrapped_channel_survives_a_reader_that_closes_early(tmp_path: Path) -> None:
    objects = {f"{i}.bin": os.urandom(1 << 20) for i in range(4)}
    data = folder_of_files(tmp_path / "d", objects)
    entry = script(
        tmp_path,
        """
        from pipemode import RecordReader
        read_epoch("train", 0, 10)  # the Rust writer then meets EPIPE
        records = list(RecordReader(os.path.join(DATA, "train_1")))
        record("sizes.json", [len(r) for r in records])
        record("same.json", records == [open(os.path.join(sys.argv[-1], f"{i}.bin"), "rb").read()
                                        for i in range(4)])
        """,
    )
    channel = Channel("train", str(data), record_wrapping="RecordIO")
    result = run(tmp_path, entry, [channel], script_args=[str(data)])
    assert result.exit_code == 0, result.failure
    assert recorded(result.job_dir, "sizes.json") == [1 << 20] * 4
    assert recorded(result.job_dir, "same.json") is True
