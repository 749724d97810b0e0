"""Helpers for the runner's tests: small entry points that read the FIFOs directly, and runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipemode.runner import Channel, JobResult, TrainingJob

# Every script gets these helpers: open or read epoch N of a channel, and record what it saw.
# Like a Pipe Mode reader, open_epoch waits for the next epoch's FIFO, which may not exist yet.
_PRELUDE = """
import json, os, sys, time
DATA = os.path.join(os.environ["SM_INPUT_DIR"], "data")
def open_epoch(channel, epoch):
    path = os.path.join(DATA, f"{channel}_{epoch}")
    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.001)
    return open(path, "rb")
def read_epoch(channel, epoch, limit=-1):
    with open_epoch(channel, epoch) as f:
        return f.read(limit)
def record(name, value):
    with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], name), "w") as f:
        json.dump(value, f)
def keep_pid(name, pid=None):  # for the test to check, and to clean up after a failure
    path = os.path.join(os.environ["PIPEMODE_TEST_PIDS"], name)
    with open(path + ".tmp", "w") as f:
        f.write(str(pid or os.getpid()))
    os.rename(path + ".tmp", path)
def wait_for_pid(name):
    while not os.path.exists(os.path.join(os.environ["PIPEMODE_TEST_PIDS"], name)):
        time.sleep(0.01)
"""

# The folder where scripts keep the pids of what they start (see the `pids` fixtures).
PIDS_VARIABLE = "PIPEMODE_TEST_PIDS"


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


def process_gone(pid: int) -> bool:
    """True once `pid` has exited: a zombie counts as gone (this machine's init never reaps)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status[status.rindex(")") + 2] == "Z"


def kill_kept_pids(folder: Path) -> None:
    """Kills what the scripts of a test kept the pids of, and their groups, if still running."""
    for kept in folder.iterdir():
        if kept.suffix == ".tmp":  # being written
            continue
        pid = int(kept.read_text())
        if process_gone(pid):
            continue
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)


def free_port() -> int:
    """A loopback port free now (the kernel's pick), for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def moto_s3_server() -> Iterator[str]:
    """moto's S3-API server on a free loopback port, in a thread; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def use_s3_endpoint(monkeypatch: Any, endpoint: str, secret: str = "testing") -> None:
    """Points boto3 (and the runner's cached client) at an S3-API server on loopback, with
    made-up credentials, whatever the machine's own AWS settings are."""
    from pipemode.runner.sources import s3_client

    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3_client.cache_clear()
