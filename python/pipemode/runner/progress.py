"""What the runner shows while a job runs: the script's output, and on a terminal a live line.

The live line (epoch, bytes and throughput per channel) sits below the script's output: each
forwarded line first clears it, and it is redrawn after. Off a terminal nothing is redrawn and
only the final summary is printed.
"""

from __future__ import annotations

import shutil
import threading
from typing import TextIO

from pipemode.runner.feeder import ChannelStats

__all__ = ["Progress", "format_bytes", "format_rate"]

_CLEAR_LINE = "\r\x1b[K"


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e6:.1f} MB/s"


class Progress:
    """Serialises the script's output with the live line; one lock guards the terminal."""

    def __init__(
        self, stats: list[ChannelStats], stream: TextIO, live: bool, interval: float = 0.5
    ) -> None:
        self.stats = stats
        self.stream = stream
        self.live = live and bool(stats)
        self.interval = interval
        self._lock = threading.Lock()
        self._drawn = False
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._show_host = len({s.host for s in stats}) > 1

    def __enter__(self) -> Progress:
        if self.live:
            self._thread = threading.Thread(target=self._refresh, name="pipemode-progress")
            self._thread.daemon = True
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._clear()

    def emit(self, target: TextIO, text: str) -> None:
        """Writes a piece of the script's output to `target` without mangling the live line."""
        with self._lock:
            self._clear()
            target.write(text)
            target.flush()
            if self.live and not self._done.is_set():
                self._draw()

    def line(self) -> str:
        parts = []
        for s in self.stats:
            name = f"{s.channel}@{s.host}" if self._show_host else s.channel
            state = f"error: {s.error}" if s.error else f"epoch {s.epoch}"
            parts.append(f"{name}: {state}, {format_bytes(s.bytes)}, {format_rate(s.throughput)}")
        return "pipemode | " + " | ".join(parts)

    def _refresh(self) -> None:
        while not self._done.wait(self.interval):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        width = shutil.get_terminal_size().columns
        self.stream.write(_CLEAR_LINE + self.line()[: max(width - 1, 10)])
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write(_CLEAR_LINE)
            self.stream.flush()
            self._drawn = False
