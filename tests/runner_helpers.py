"""Helpers for the runner's tests: small entry points that read the FIFOs directly, and runs."""

from __future__ import annotations

import json
import stat
import textwrap
from pathlib import Path
from typing import Any

from pipemode.runner import Channel, JobResult, TrainingJob

# Every script gets these helpers: read epoch N of a channel, and record what it saw. Like a
# Pipe Mode reader, read_epoch waits for the next epoch's FIFO, which may not exist yet.
_PRELUDE = """
import json, os, sys, time
DATA = os.path.join(os.environ["SM_INPUT_DIR"], "data")
def read_epoch(channel, epoch, limit=-1):
    path = os.path.join(DATA, f"{channel}_{epoch}")
    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.001)
    with open(path, "rb") as f:
        return f.read(limit)
def record(name, value):
    with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], name), "w") as f:
        json.dump(value, f)
"""


def script(tmp_path: Path, body: str, name: str = "train.py") -> Path:
    path = tmp_path / name
    path.write_text(_PRELUDE + textwrap.dedent(body))
    return path


def folder_of_files(root: Path, contents: dict[str, bytes]) -> Path:
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def recorded(result_dir: Path, name: str, host: str = "algo-1") -> Any:
    return json.loads((result_dir / host / "output" / "data" / name).read_text())


def fifos_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if stat.S_ISFIFO(p.lstat().st_mode)]


def run(tmp_path: Path, entry: Path, channels: list[Channel], **options: Any) -> JobResult:
    options.setdefault("job_name", "job")
    return TrainingJob(entry, channels, output_path=tmp_path / "out", **options).run(live=False)
