"""Reading and writing Pipe Mode record streams without any framework.

`RecordReader` reads a FIFO or file of RecordIO, TFRecord or TextLine records on a native
thread that frames ahead into a bounded queue; Python gets whole `RecordBatch`es (one payload
buffer plus offsets) or records one by one as `bytes`. Nothing is opened until the first read,
so creating a reader over a Pipe Mode FIFO neither blocks nor claims the FIFO.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from pipemode import _native
from pipemode._native import RecordBatch
from pipemode.reader_base import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PREFETCH,
    PathLike,
    StreamReader,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_OPEN_TIMEOUT",
    "PathLike",
    "RecordBatch",
    "RecordReader",
    "RecordWriter",
]

# Defined in the Rust core (see reader_base.py).
DEFAULT_BATCH_SIZE: int = _native.DEFAULT_BATCH_SIZE
DEFAULT_MAX_BATCH_BYTES: int = _native.DEFAULT_MAX_BATCH_BYTES


class RecordReader(StreamReader[_native.RecordReader]):
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
        super().__init__(path, name, open_timeout)
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
