"""What every reader over a native reader thread shares (`RecordReader`, `DenseReader`).

The path and name, closing and the context manager, the counters, the warning about skipped
records, the one-time note when opening the source takes long, and the rule that no reader
keeps the interpreter from exiting.

Why readers are stopped at exit: a thread waiting for a batch waits in Rust with the GIL
released. A thread that comes back for the GIL once the interpreter is finalizing is parked for
good (PyO3 cannot let it run on), and TensorFlow's iterator destructors, which run during
finalization, wait for their threads: the process would never exit. So at exit every live reader
is closed (a waiting read then returns at once), no native read starts any more, and the exit
waits, briefly and with the GIL released, until no thread is inside one.
"""

from __future__ import annotations

import atexit
import logging
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar, Union

from pipemode import _native

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_OPEN_TIMEOUT",
    "DEFAULT_PREFETCH",
    "InterpreterExiting",
    "PathLike",
    "StreamReader",
    "raise_if_exiting",
    "stop_readers_at_exit",
]

logger = logging.getLogger("pipemode")

PathLike = Union[str, "os.PathLike[str]"]

# Every default is defined once, in the Rust core, and read here from `_native`.
# The read buffer (and the FIFO's pipe size asked for), and how many batches the reader thread
# may hold ready ahead of the consumer.
DEFAULT_BUFFER_SIZE: int = _native.DEFAULT_BUFFER_SIZE
DEFAULT_PREFETCH: int = _native.DEFAULT_PREFETCH

# How long, in seconds, a reader waits for its FIFO to appear and for its writer to open the
# other end. The incumbent meant 120 s (and really waited about two hours); a bounded wait is
# the point.
DEFAULT_OPEN_TIMEOUT: float | None = _native.DEFAULT_OPEN_TIMEOUT

# After this many seconds without a first batch, a reader says once, on the `pipemode` logger,
# what it is waiting for: a mistyped path would otherwise wait out `open_timeout` in silence.
WAIT_NOTE_AFTER = 5.0

_Native = TypeVar("_Native", _native.RecordReader, _native.DenseReader)
_Reader = TypeVar("_Reader", bound="StreamReader[Any]")
_Item = TypeVar("_Item")


class StreamReader(Generic[_Native]):
    """The base of the readers over a native reader thread.

    Subclasses set ``_native`` to their native reader, built at once so that bad arguments fail
    there, yet opening nothing until the first read.
    """

    _native: _Native

    def __init__(self, path: PathLike, name: str | None, open_timeout: float | None) -> None:
        self._path = os.fspath(path)
        self._name = name
        self._open_timeout = open_timeout
        self._skipped_reported = 0
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def _drain(self, next_item: Callable[[], _Item | None]) -> Iterator[_Item]:
        """Yields what `next_item` returns until None, warning about skipped records as they
        are counted."""
        _live_readers.add(self)  # from its first read on, it has a thread to stop at exit
        _exit_guard.used = True
        if not self._native.started:
            self._note_a_long_wait()
        while True:
            item = _exit_guard.call(next_item)
            self._report_skipped()
            if item is None:
                return
            yield item

    def _note_a_long_wait(self) -> None:
        timeout = self._open_timeout
        if timeout is not None and timeout <= WAIT_NOTE_AFTER:
            return
        if _exit_guard.call(lambda: self._native.wait_ready(WAIT_NOTE_AFTER)):
            return
        limit = "with no time limit" if timeout is None else f"for up to {timeout:g} s"
        logger.warning(
            "%s: still waiting, after %g s, %s; waiting %s (open_timeout), then PipeTimeoutError",
            self._label(),
            WAIT_NOTE_AFTER,
            _what_opening_waits_for(self._path),
            limit,
        )

    def _report_skipped(self) -> None:
        skipped = self._native.records_skipped
        if skipped > self._skipped_reported:
            logger.warning(
                "%s: skipped %d corrupt TFRecord record(s) with a bad data CRC (%d in total)",
                self._label(),
                skipped - self._skipped_reported,
                skipped,
            )
            self._skipped_reported = skipped

    def _label(self) -> str:
        return f"{self._name} {self._path}" if self._name else self._path

    def close(self) -> None:
        """Stops reading and closes the FIFO or file (its writer then sees EPIPE)."""
        self._closed = True
        self._native.close()

    def __enter__(self: _Reader) -> _Reader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Counters, for throughput and stall diagnosis.
    @property
    def records_read(self) -> int:
        return self._native.records_read

    @property
    def bytes_read(self) -> int:
        return self._native.bytes_read

    @property
    def records_skipped(self) -> int:
        return self._native.records_skipped

    @property
    def pipe_wait_seconds(self) -> float:
        """Seconds the reader thread waited for the path, the FIFO's writer or its data."""
        return self._native.pipe_wait_seconds

    @property
    def consumer_wait_seconds(self) -> float:
        """Seconds the reader thread waited for the consumer to take what it had read."""
        return self._native.consumer_wait_seconds


def _what_opening_waits_for(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"for {path} to appear (it does not exist; is the path or channel name right?)"
    except OSError as error:
        return f"for {path} ({error.strerror})"
    if stat.S_ISFIFO(mode):
        return f"for a writer to open the FIFO {path}"
    return f"for {path} to open"


class _ExitGuard:
    """Counts the threads inside a native read and refuses new ones once the interpreter exits
    (see the module's docstring)."""

    # How long the exit waits for threads inside a native read to come back, at most, and how
    # long no thread must have tried one before it goes on.
    MAX_WAIT = 5.0
    QUIET = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._exiting = False
        self._last_refused = 0.0
        self.used = False

    def call(self, read: Callable[[], _Item]) -> _Item:
        with self._lock:
            if self._exiting:
                self._last_refused = time.monotonic()
                raise _exiting_error()
            self._inside += 1
        try:
            return read()
        finally:
            with self._lock:
                self._inside -= 1

    def refuse_if_exiting(self) -> None:
        with self._lock:
            if self._exiting:
                self._last_refused = time.monotonic()
                raise _exiting_error()

    def stop_readers(self) -> None:
        with self._lock:
            if self._exiting:
                return
            self._exiting = True
        if not self.used:
            return  # nothing was ever read: no thread to wait for
        for reader in list(_live_readers):
            reader.close()
        deadline = time.monotonic() + self.MAX_WAIT
        while time.monotonic() < deadline:
            with self._lock:
                quiet = self._inside == 0 and time.monotonic() - self._last_refused > self.QUIET
            if quiet:
                return
            time.sleep(0.01)  # releases the GIL to the threads coming back


class InterpreterExiting(RuntimeError):
    """A read or an epoch claim refused because the interpreter is exiting."""


def _exiting_error() -> InterpreterExiting:
    return InterpreterExiting("pipemode: no new reads while the interpreter exits")


def raise_if_exiting() -> None:
    """Raises once the interpreter is exiting: nothing should claim an epoch then."""
    _exit_guard.refuse_if_exiting()


def stop_readers_at_exit() -> None:
    """Closes every reader and refuses new reads; run at exit, once (see the module's doc)."""
    _exit_guard.stop_readers()


_live_readers: weakref.WeakSet[StreamReader[Any]] = weakref.WeakSet()
_exit_guard = _ExitGuard()
atexit.register(stop_readers_at_exit)
