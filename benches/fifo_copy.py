"""The FIFO copy limit: `cat fifo > /dev/null`, the peer every FIFO benchmark is measured against.

Two versions: `cat` as it is, through Linux's default 64 KiB pipe, and `cat` through the FIFO's
pipe enlarged first to the 1 MiB that pipemode's readers ask for. On a 2-core VM the first is
bimodal (0.75 to 3.5 GB/s from run to run, most likely as the two processes share a core or
not); the second is steady. Benchmarks report both and compare with the faster.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

__all__ = ["READER_PIPE_SIZE", "cat_to_devnull"]

# The pipe size RecordReader asks for its FIFO (its 1 MiB read buffer, Linux's pipe-max-size).
READER_PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = 1031  # Linux's fcntl command; Python's fcntl names it only from 3.10


def cat_to_devnull(fifo: Path, writer_pid: int, pipe_size: int | None = None) -> None:
    """Runs `cat fifo > /dev/null` until the writer `writer_pid` closes the FIFO.

    With `pipe_size`, the pipe is enlarged first: holding the FIFO open read-write keeps its pipe
    alive while it is enlarged and both ends open it; closing it once they have lets `cat` see
    the writer's end of file.
    """
    import fcntl

    holder = os.open(fifo, os.O_RDWR | os.O_NONBLOCK) if pipe_size else None
    if holder is not None:
        fcntl.fcntl(holder, F_SETPIPE_SZ, pipe_size)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.DEVNULL)
    if holder is not None:
        _wait_until_open(fifo, [writer_pid, reader.pid])
        os.close(holder)
    if reader.wait() != 0:
        raise RuntimeError(f"cat {fifo} failed")


def _wait_until_open(fifo: Path, pids: list[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(_holds_open(pid, str(fifo)) for pid in pids):
            return
        time.sleep(0.001)
    raise TimeoutError(f"{fifo} was not opened by {pids}")


def _holds_open(pid: int, target: str) -> bool:
    folder = f"/proc/{pid}/fd"
    try:
        return any(os.readlink(f"{folder}/{fd}") == target for fd in os.listdir(folder))
    except FileNotFoundError:
        return False
