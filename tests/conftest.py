"""Fixtures shared by the test modules: real FIFOs fed by a real writer process."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pipemode
import pytest


def pytest_report_header() -> str:
    return f"pipemode {pipemode.__version__} from {Path(pipemode.__file__).parent}"


def pytest_configure(config: pytest.Config) -> None:
    """CI's checks of what it tests, set by environment variables (see .ci/test-wheel).

    PIPEMODE_TEST_INSTALLED=1: pipemode must come from site-packages (the installed wheel), not
    from the source tree. PIPEMODE_REQUIRE=tensorflow,torch: these must import, so that a test
    skipped for want of one (`pytest.importorskip`) cannot pass a run unnoticed.
    """
    if os.environ.get("PIPEMODE_TEST_INSTALLED") == "1":
        installed_in = {Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib")}
        package = Path(pipemode.__file__).resolve().parent
        if package.parent not in installed_in:
            raise pytest.UsageError(
                f"pipemode was imported from {package}, not from the installed wheel in "
                f"{' or '.join(map(str, sorted(installed_in)))}"
            )
    for name in filter(None, os.environ.get("PIPEMODE_REQUIRE", "").split(",")):
        try:
            importlib.import_module(name.strip())
        except ImportError as missing:
            raise pytest.UsageError(
                f"PIPEMODE_REQUIRE names {name!r}, which does not import here ({missing}): its "
                "tests would be skipped"
            ) from missing


class FifoFeeder:
    """Makes FIFOs and feeds each from its own `cat` process, as SageMaker's agent would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.writers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __call__(self, data: bytes | Path, name: str = "channel_0") -> Path:
        """Returns the path of a new FIFO whose writer sends `data` (bytes or a file's content).

        `name` may hold folders below this feeder's folder; they are made as needed.
        """
        fifo = self.folder / name
        fifo.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(fifo)
        if isinstance(data, bytes):
            source = fifo.parent / f".{fifo.name}.source"
            source.write_bytes(data)
        else:
            source = data
        writer = subprocess.Popen(["sh", "-c", 'exec cat "$0" > "$1"', str(source), str(fifo)])
        self.writers.append((writer, fifo))
        return fifo

    def close(self) -> None:
        for writer, fifo in self.writers:
            if writer.poll() is None:
                # A writer still blocked in open() waits for a reader: give it one, then stop it.
                try:
                    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                    os.close(fd)
                except OSError:
                    pass
                writer.kill()
            writer.wait(timeout=10)


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """`fifo(data, name="channel_0")` makes `tmp_path/name` a FIFO fed by a `cat` process."""
    feeder = FifoFeeder(tmp_path)
    yield feeder
    feeder.close()


class PipeJob:
    """A training job's folders as SageMaker lays them out, with FIFOs in `pipe_dir`."""

    def __init__(self, root: Path, feeder: FifoFeeder) -> None:
        self.pipe_dir = root
        self.config_dir = root / "config"
        self.state_dir = root / "state"
        self.config_dir.mkdir()
        self.feeder = feeder
        self.input_data_config: dict[str, dict[str, str]] = {}

    def add_channel(
        self, name: str, mode: str = "Pipe", record_wrapping: str | None = "None"
    ) -> None:
        """A channel in inputdataconfig.json; `record_wrapping=None` leaves RecordWrapperType
        out, as a config written by hand may."""
        self.input_data_config[name] = {
            "TrainingInputMode": mode,
            "S3DistributionType": "FullyReplicated",
        }
        if record_wrapping is not None:
            self.input_data_config[name]["RecordWrapperType"] = record_wrapping
        (self.config_dir / "inputdataconfig.json").write_text(json.dumps(self.input_data_config))

    def feed(self, channel: str, epoch: int, data: bytes | Path) -> Path:
        """Serves `data` as epoch `epoch` of `channel`: the FIFO `<pipe_dir>/<channel>_<epoch>`."""
        return self.feeder(data, name=f"{channel}_{epoch}")

    def dirs(self) -> dict[str, str]:
        """The folder keyword arguments of `PipeModeChannel` and `PipeModeDataset`."""
        return {
            "state_dir": str(self.state_dir),
            "pipe_dir": str(self.pipe_dir),
            "config_dir": str(self.config_dir),
        }


@pytest.fixture
def pipe_job(tmp_path: Path, fifo: FifoFeeder) -> PipeJob:
    """A job folder in `tmp_path`: `add_channel(name)`, then `feed(channel, epoch, data)`."""
    return PipeJob(tmp_path, fifo)
