"""The README's Python examples, run as tests.

Each ```python block of README.md runs in a temporary folder (its working directory), with
`SAGEMAKER_BASE_DIR` pointing at a job folder there that stands in for `/opt/ml` (the block's
`/opt/ml` paths are pointed there too), and with the channels, FIFOs (each fed by a writer
process) and files it expects made by the setup below that matches it. Each setup also checks
afterwards that the block did what the README says it does. A block that cannot run here says so
on a line of its own: `# readme-test: skip (<why>)`. A block with neither fails: give it a setup.
"""

from __future__ import annotations

import json
import re
import struct
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pipemode
import pytest
from conftest import FifoFeeder
from runner_helpers import moto_s3_server, use_s3_endpoint

README = Path(__file__).parents[1] / "README.md"
SKIP_MARKER = re.compile(r"^# readme-test: skip \((?P<why>.+)\)$", re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown text: (the line number of the fence, the code)."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        blocks.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


BLOCKS = python_blocks(README.read_text())


@dataclass
class Sandbox:
    """What a block finds: a working folder, a job folder for /opt/ml, FIFO writers."""

    folder: Path
    feeder: FifoFeeder
    channels: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        return self.folder / "opt_ml"

    def pipe_channel(self, name: str, record_wrapping: str = "None") -> None:
        self.channels[name] = {
            "TrainingInputMode": "Pipe",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": record_wrapping,
        }
        config = self.base / "input" / "config" / "inputdataconfig.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(self.channels))

    def feed(self, channel: str, epochs: int, records: list[bytes], record_format: str) -> None:
        """Serves `records` as epochs 0 .. epochs - 1 of the Pipe channel `channel`."""
        data = encode(records, record_format, self.folder / f".{channel}.{record_format}")
        for epoch in range(epochs):
            self.feeder(data, name=f"opt_ml/input/data/{channel}_{epoch}")

    def fed_in_full(self, first: int | None = None) -> bool:
        """True once every writer (or the `first` ones) has sent all it had (a reader that
        closed early gave it EPIPE)."""
        return all(writer.wait(timeout=30) == 0 for writer, _ in self.feeder.writers[:first])

    def epochs_claimed(self, channel: str) -> int:
        return int((self.base / "pipe_state" / f".{channel}-pipe_mode-state").read_text())


def encode(records: list[bytes], record_format: str, path: Path) -> Path:
    with pipemode.RecordWriter(path, record_format) as writer:
        for record in records:
            writer.write(record)
    return path


def tutorial_records(n: int) -> list[bytes]:
    draw = np.random.default_rng(0)
    return [
        pipemode.encode_example({"data": draw.normal(i % 2, 1, 1024).tobytes(), "labels": [i % 2]})
        for i in range(n)
    ]


# A setup returns the names a block finds defined, and a check to run on its names afterwards.
Check = Callable[[dict[str, Any]], None]
Setup = tuple[dict[str, Any], Check]
Put = Callable[[dict[str, bytes]], None]


def setup_drop_in(box: Sandbox) -> Setup:
    tf = pytest.importorskip("tensorflow")
    box.pipe_channel("train")
    box.feed("train", 1, [b"r0", b"r1"], "TFRecord")

    def check(names: dict[str, Any]) -> None:
        dataset = names["dataset"]
        assert dataset.element_spec == tf.TensorSpec(shape=(), dtype=tf.string)
        assert list(dataset.as_numpy_iterator()) == [b"r0", b"r1"]

    return {}, check


def setup_features(box: Sandbox) -> Setup:
    tf = pytest.importorskip("tensorflow")
    from pipemode import PipeModeDataset

    box.pipe_channel("train")
    # Five epochs for fit(epochs=5), and a sixth to look at a batch.
    box.feed("train", 6, tutorial_records(80), "RecordIO")
    model = tf.keras.Sequential([tf.keras.Input((1024,)), tf.keras.layers.Dense(1)])
    model.compile("sgd", tf.keras.losses.BinaryCrossentropy(from_logits=True))

    def check(names: dict[str, Any]) -> None:
        assert box.epochs_claimed("train") == 5 and box.fed_in_full(first=5)
        batch = next(iter(names["dataset"]))
        assert batch["data"].dtype == tf.float64 and batch["data"].shape == (64, 1024)
        assert batch["labels"].dtype == tf.int64 and batch["labels"].shape == (64,)

    return {"tf": tf, "PipeModeDataset": PipeModeDataset, "model": model}, check


def setup_channel(box: Sandbox) -> Setup:
    box.pipe_channel("train")
    box.feed("train", 3, [b"a", b"b" * 5000], "RecordIO")

    def check(names: dict[str, Any]) -> None:
        assert box.epochs_claimed("train") == 3 and box.fed_in_full()

    return {}, check


def setup_records(box: Sandbox) -> Setup:
    records = [b"first", b"", b"third"]
    box.feed("train", 1, records, "TFRecord")

    def check(names: dict[str, Any]) -> None:
        magic = struct.pack("<II", 0xCED7230A, len(b"a record"))
        assert (box.folder / "train.rec").read_bytes() == magic + b"a record"
        assert isinstance(names["batch"], pipemode.RecordBatch)
        assert bytes(names["payloads"]) == b"".join(records)
        assert names["offsets"].tolist() == [0, 5, 5, 10]
        assert box.fed_in_full()

    return {}, check


def setup_dense(box: Sandbox) -> Setup:
    torch = pytest.importorskip("torch")
    records = tutorial_records(100)
    box.feed("train", 1, records, "RecordIO")

    def check(names: dict[str, Any]) -> None:
        x = names["x"]  # the last batch: 100 = 64 + 36
        assert x.dtype == torch.float64 and tuple(x.shape) == (36, 1024)
        assert box.fed_in_full()

    return {}, check


def setup_torch(box: Sandbox) -> Setup:
    torch = pytest.importorskip("torch")
    box.pipe_channel("train")
    box.pipe_channel("eval")
    box.feed("train", 2, tutorial_records(100), "RecordIO")
    eval_records = [b"a", b"bc" * 20, b"", b"def"] * 20
    box.feed("eval", 1, eval_records, "RecordIO")

    def check(names: dict[str, Any]) -> None:
        x, y = names["x"], names["y"]  # the last batch: 100 = 64 + 36
        assert x.dtype == torch.float64 and tuple(x.shape) == (36, 1024)
        assert y.tolist() == [i % 2 for i in range(64, 100)]
        assert names["sizes"].tolist() == [len(r) for r in eval_records]
        assert box.epochs_claimed("train") == 2 and box.epochs_claimed("eval") == 1
        assert box.fed_in_full()

    return {}, check


def setup_manifest(box: Sandbox) -> Setup:
    tf = pytest.importorskip("tensorflow")
    box.pipe_channel("train", record_wrapping="RecordIO")
    pixels = np.full((4, 6, 3), 200, dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(pixels).numpy()
    # Three lines, as the runner frames an augmented manifest: one record per attribute.
    box.feed("train", 1, [jpeg, b"1", jpeg, b"0", jpeg, b"1"], "RecordIO")

    def check(names: dict[str, Any]) -> None:
        assert names["image"].shape == (4, 6, 3)
        assert int(names["label"]) == 0  # the second line's class

    return {}, check


# The README estimator's train.py: reads one epoch of each channel, saves what it read.
_TRAIN_SCRIPT = """
import json, os, pathlib
sizes = {}
for channel in ("train", "eval"):
    with open(os.environ[f"SM_CHANNEL_{channel.upper()}"] + "_0", "rb") as fifo:
        sizes[channel] = len(fifo.read())
pathlib.Path(os.environ["SM_MODEL_DIR"], "sizes.json").write_text(json.dumps(sizes))
"""


def setup_estimator(box: Sandbox, s3: Put) -> Setup:
    s3({"train/part-0": b"t" * 1000, "train/part-1": b"u" * 500})
    (box.folder / "data" / "eval").mkdir(parents=True)
    (box.folder / "data" / "eval" / "e").write_bytes(b"e" * 300)
    (box.folder / "train.py").write_text(_TRAIN_SCRIPT)

    def check(names: dict[str, Any]) -> None:
        model_data = names["estimator"].model_data
        assert model_data.is_relative_to(box.folder / "jobs")
        with tarfile.open(model_data) as archive:
            sizes = json.load(archive.extractfile("sizes.json"))  # type: ignore[arg-type]
        assert sizes == {"train": 1500, "eval": 300}

    return {}, check


# Each setup, and what only its block holds: loose enough that a wrong argument in the block is
# caught by the setup's check, not by a missing setup.
SETUPS: dict[str, Callable[..., Setup]] = {
    "# was: from sagemaker_tensorflow import": setup_drop_in,
    "model.fit(": setup_features,
    "PipeModeChannel(": setup_channel,
    "pipemode.RecordWriter(": setup_records,
    "pipemode.DenseReader(": setup_dense,
    "from pipemode.torch import": setup_torch,
    "attribute_names=": setup_manifest,
    "Estimator(": setup_estimator,
}


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Put]:
    """`put({key: body})` into a bucket named `my-bucket`, the README's, on a moto server."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    from pipemode.runner.sources import s3_client

    with moto_s3_server() as endpoint:
        use_s3_endpoint(monkeypatch, endpoint)
        bucket = boto3.resource("s3", endpoint_url=endpoint).create_bucket(Bucket="my-bucket")
        yield lambda objects: [bucket.put_object(Key=k, Body=v) for k, v in objects.items()]
        s3_client.cache_clear()


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_readme_example_runs(
    line: int,
    code: str,
    tmp_path: Path,
    fifo: FifoFeeder,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    skip = SKIP_MARKER.search(code)
    if skip:
        pytest.skip(skip["why"])
    setups = [setup for key, setup in SETUPS.items() if key in code]
    assert len(setups) == 1, f"README.md:{line}: give this block one setup, or a skip marker"
    (setup,) = setups
    box = Sandbox(tmp_path, fifo)
    box.base.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(box.base))
    for variable in ("SM_INPUT_DIR", "SM_INPUT_CONFIG_DIR"):
        monkeypatch.delenv(variable, raising=False)
    extra = [request.getfixturevalue("s3_bucket")] if setup is setup_estimator else []
    names, check = setup(box, *extra)
    # Run from a file whose line numbers are the README's: tracebacks point at the README line,
    # and TensorFlow's AutoGraph, which reads a function's source, finds it.
    source = tmp_path / f"README.md-line-{line}.py"
    source.write_text("\n" * line + code.replace("/opt/ml", str(box.base)))
    with warnings.catch_warnings():
        # Keras's own warnings about fit() on a dataset, not the README's doing.
        warnings.filterwarnings("ignore", "`shuffle=True` was passed", UserWarning)
        # Keras 3 says so after the first epoch of any dataset of unknown length; all epochs run.
        warnings.filterwarnings("ignore", "Your input ran out of data", UserWarning)
        exec(compile(source.read_text(), str(source), "exec"), names)
    check(names)


def test_the_blocks_are_found() -> None:
    # A fence the pattern missed would silently test nothing.
    assert len(BLOCKS) == README.read_text().count("```python\n") >= len(SETUPS)
