"""Fixtures shared by the test modules: real FIFOs fed by a real writer process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest


class FifoFeeder:
    """Makes FIFOs and feeds each from its own `cat` process, as SageMaker's agent would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.writers: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __call__(self, data: bytes | Path, name: str = "channel_0") -> Path:
        """Returns the path of a new FIFO whose writer sends `data` (bytes or a file's content)."""
        fifo = self.folder / name
        os.mkfifo(fifo)
        if isinstance(data, bytes):
            source = self.folder / f".{name}.source"
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
