"""Reading and writing Pipe Mode record streams without any framework.

`RecordReader` reads a FIFO or file of RecordIO, TFRecord or TextLine records on a native
thread that frames ahead into a bounded queue; Python gets whole `RecordBatch`es (one payload
buffer plus offsets) or records one by one as `bytes`. Nothing is opened until the first read,
so creating a reader over a Pipe Mode FIFO neither blocks nor claims the FIFO.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Generic, TypeVar, Union

from pipemode import _native
from pipemode._native import RecordBatch

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_OPEN_TIMEOUT",
    "PathLike",
    "RecordBatch",
    "RecordReader",
    "RecordWriter",
]

logger = logging.getLogger("pipemode")

PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_BATCH_SIZE = 1024
DEFAULT_MAX_BATCH_BYTES = 16 << 20
# The read buffer (and the FIFO's pipe size asked for), and how many batches the reader thread
# may hold ready ahead of the consumer.
DEFAULT_BUFFER_SIZE = 1 << 20
DEFAULT_PREFETCH = 4

# How long a reader waits for its FIFO to appear and for its writer to open the other end.
# The incumbent meant 120 s (and really waited about two hours); a bounded wait is the point.
DEFAULT_OPEN_TIMEOUT = 120.0


# The native readers, which share their counters (`_native._ReaderCounters`) and `close`.
_Native = TypeVar("_Native", _native.RecordReader, _native.ExampleReader)
_Reader = TypeVar("_Reader", bound="_StreamReader[Any]")
_Item = TypeVar("_Item")


class _StreamReader(Generic[_Native]):
    """What every reader over a native reader thread shares: the path, closing, the context
    manager, the warning about skipped records, and the counters.

    Subclasses set ``_native`` to their native reader, built at once so that bad arguments fail
    there, yet opening nothing until the first read.
    """

    _native: _Native

    def __init__(self, path: PathLike, name: str | None) -> None:
        self._path = os.fspath(path)
        self._name = name
        self._skipped_reported = 0
        self._closed = False

    @property
    def path(self) -> str:
        return self._path

    def _drain(self, next_item: Callable[[], _Item | None]) -> Iterator[_Item]:
        """Yields what `next_item` returns until None, warning about skipped records as they
        are counted."""
        while True:
            item = next_item()
            self._report_skipped()
            if item is None:
                return
            yield item

    def _report_skipped(self) -> None:
        skipped = self._native.records_skipped
        if skipped > self._skipped_reported:
            label = f"{self._name} {self._path}" if self._name else self._path
            logger.warning(
                "%s: skipped %d corrupt TFRecord record(s) with a bad data CRC (%d in total)",
                label,
                skipped - self._skipped_reported,
                skipped,
            )
            self._skipped_reported = skipped

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


class RecordReader(_StreamReader[_native.RecordReader]):
    """Reads the records of one FIFO or file, in order, each exactly once.

    ``for record in reader`` yields each record as ``bytes``; ``reader.batches(n)`` yields
    `RecordBatch`es of up to ``n`` records, ended early once they hold ``max_batch_bytes`` of
    payload. Bad framing raises `pipemode.CorruptRecordError`
    naming the path and byte offset; a path or FIFO writer that does not appear within
    ``open_timeout`` seconds raises `pipemode.PipeTimeoutError`.

    With ``max_corrupted_records_to_skip=k`` (TFRecord only), up to ``k`` consecutive records
    whose data CRC is wrong are skipped and counted (a warning on the ``pipemode`` logger says
    how many); a bad length CRC is always an error.
    """

    def __init__(
        self,
        path: PathLike,
        record_format: str = "RecordIO",
        *,
        max_corrupted_records_to_skip: int = 0,
        multipart: str = "dmlc",
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        name: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        super().__init__(path, name)
        self._options: dict[str, Any] = {
            "record_format": record_format,
            "max_corrupted_records_to_skip": max_corrupted_records_to_skip,
            "multipart": multipart,
            "open_timeout": open_timeout,
            "name": name,
            "max_batch_bytes": max_batch_bytes,
            "buffer_size": buffer_size,
            "prefetch": prefetch,
        }
        # Built now so that bad arguments fail here; it opens nothing yet.
        self._native = self._new_native(batch_size)
        self._batch_size = batch_size

    def _new_native(self, batch_size: int) -> _native.RecordReader:
        return _native.RecordReader(self._path, batch_size=batch_size, **self._options)

    def batches(self, n: int | None = None) -> Iterator[RecordBatch]:
        """Yields batches of up to ``n`` records (default: the reader's ``batch_size``).

        The batch size is fixed by the first read; asking for another size afterwards is an
        error, because batches already read ahead have the old size.
        """
        if n is not None and n != self._batch_size:
            self._resize_batches(n)
        yield from self._drain(self._native.next_batch)

    def _resize_batches(self, n: int) -> None:
        # Checked first: a closed reader that never started would otherwise be rebuilt and
        # read its source again.
        if self._closed:
            raise ValueError(f"{self._path}: the reader is closed")
        if self._native.started:
            raise ValueError(
                f"{self._path}: batches of {self._batch_size} records are already being "
                f"read; create the reader with batch_size={n} to read batches of {n}"
            )
        self._native = self._new_native(n)
        self._batch_size = n

    def __iter__(self) -> Iterator[bytes]:
        for batch in self.batches():
            yield from batch

    def __repr__(self) -> str:
        return f"RecordReader({self._path!r}, {self._options['record_format']!r})"


class RecordWriter:
    """Writes records to a file or FIFO: TFRecord byte-identical to ``tf.io.TFRecordWriter``,
    RecordIO as dmlc/MXNet write it, TextLine one record per line.

    Opening a FIFO waits for its reader. Use it as a context manager to flush and close.
    """

    def __init__(self, path: PathLike, record_format: str = "RecordIO") -> None:
        self._path = os.fspath(path)
        self._native = _native.RecordWriter(self._path, record_format)

    @property
    def path(self) -> str:
        return self._path

    def write(self, record: bytes | bytearray | memoryview) -> None:
        self._native.write(record)

    def flush(self) -> None:
        self._native.flush()

    def close(self) -> None:
        self._native.close()

    @property
    def closed(self) -> bool:
        return self._native.closed

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
