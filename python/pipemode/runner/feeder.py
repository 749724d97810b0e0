"""The per-channel FIFO feeder: SageMaker's side of a Pipe Mode channel.

For epoch N the feeder makes `<channel>_N`, waits for the training script to open it, streams the
epoch's objects into it and closes it; then makes `<channel>_{N+1}`, for as long as the job runs.
A reader may stop early: the write then fails with EPIPE, which ends the epoch, as on SageMaker.
A feeder stops promptly when asked in the usual cases: the wait for a reader polls a stop flag,
the flag is checked between writes, and a write into a pipe whose reader has exited fails at
once. A read from S3 that stalls times out (botocore's read timeout, see fetch.S3Settings).

An epoch that cannot be served whole (an object that cannot be read, a file that shrank, a
truncated gzip member) is never ended like a complete one: the feeder reports the error, which
fails the job, and keeps the FIFO open until the job stops it, so the script sees no clean EOF.
Runs of S3 objects are fetched ahead, concurrently and in order (fetch.fetch_ahead).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import itertools
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipemode.channel import fifo_name
from pipemode.reader import RecordWriter
from pipemode.runner import fetch
from pipemode.runner.channels import Channel
from pipemode.runner.manifest import stream_manifest_epoch
from pipemode.runner.sources import (
    DataObject,
    LocalObject,
    check_complete,
    epoch_stream,
    gunzip,
    read_chunks,
    s3_client,
    s3_settings,
)

__all__ = ["ChannelFeeder", "ChannelStats"]

# Linux's F_SETPIPE_SZ (fcntl exposes it from Python 3.10 on). A 1 MiB pipe (the default
# /proc/sys/fs/pipe-max-size) lets each write and read move more per system call.
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 1 << 20
# sendfile() moves file pages into the pipe inside the kernel; one call per 8 MiB keeps the
# stop flag and the byte counters fresh without costing throughput.
_SENDFILE_STEP = 8 << 20
# The feeder polls for its reader (a blocking open() could not be stopped): a reader that opens
# a FIFO waits at most this long for the data to start, and an idle channel costs 100 wake-ups/s.
_MAX_POLL_DELAY = 0.01


class _Stopped(Exception):
    pass


@dataclass
class ChannelStats:
    """What a feeder has served so far, read by the progress display and the summary."""

    channel: str
    host: str
    epoch: int = 0
    epochs_served: int = 0
    bytes: int = 0
    # Seconds during which a reader held a FIFO open: the denominator of the throughput.
    busy_seconds: float = 0.0
    reading_since: float | None = None
    error: str | None = None

    @property
    def busy_now(self) -> float:
        since = self.reading_since
        return self.busy_seconds + (time.monotonic() - since if since is not None else 0.0)

    @property
    def throughput(self) -> float:
        """Bytes per second while a reader was attached."""
        busy = self.busy_now
        return self.bytes / busy if busy > 0 else 0.0


@dataclass
class ChannelFeeder:
    """Serves one Pipe channel of one host, epoch after epoch, in a thread of its own."""

    channel: Channel
    objects: Sequence[DataObject]
    data_dir: Path
    host: str
    host_index: int = 0
    host_count: int = 1
    on_error: Callable[[ChannelFeeder, BaseException], None] = lambda feeder, error: None
    stats: ChannelStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = ChannelStats(self.channel.name, self.host)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"pipemode-feeder-{self.host}-{self.channel.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Waits for the thread; True if it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _send_manifest(self, fd: int, epoch: int) -> None:
        """Streams an epoch of an augmented manifest (the channel's one object), line by line."""
        stream = stream_manifest_epoch(
            self.objects[0], self.channel, epoch, self.host_index, self.host_count
        )
        with contextlib.closing(stream) as chunks:  # closes the objects fetched ahead
            for chunk in chunks:
                self._write_all(fd, chunk)

    def _run(self) -> None:
        epoch = 0
        try:
            while not self._stop.is_set():
                fifo = self.data_dir / fifo_name(self.channel.name, epoch)
                os.mkfifo(fifo, 0o600)
                try:
                    fd = self._open_when_read(fifo)
                    if fd is None:
                        return
                    self._serve(fd, fifo, epoch)
                finally:
                    fifo.unlink(missing_ok=True)
                epoch += 1
        except _Stopped:
            pass
        except BaseException as error:
            self._report(error)

    def _report(self, error: BaseException) -> None:
        self.stats.error = str(error)
        self.on_error(self, error)

    def _open_when_read(self, fifo: Path) -> int | None:
        """Opens the FIFO for writing once a reader has it open; None if stopped first."""
        delay = 0.001
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
            else:
                os.set_blocking(fd, True)
                with contextlib.suppress(OSError):  # a smaller pipe is slower, not wrong
                    fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
                return fd
            if self._stop.wait(delay):
                return None
            delay = min(delay * 2, _MAX_POLL_DELAY)

    def _serve(self, fd: int, fifo: Path, epoch: int) -> None:
        """Streams the epoch into `fd`, which it owns and closes once the epoch is over: at its
        end, when the reader left early, or, after a failure, when the job stops the feeder."""
        self.stats.epoch = epoch
        self.stats.reading_since = time.monotonic()
        served = False
        try:
            objects = epoch_stream(
                self.objects, self.channel, epoch, self.host_index, self.host_count
            )
            if self.channel.s3_data_type == "AugmentedManifestFile":
                self._send_manifest(fd, epoch)
            elif self.channel.record_wrapping == "RecordIO":
                self._send_wrapped(fifo, objects)
            else:
                # Closed at once however the epoch ends, so that its fetches stop there and then.
                with contextlib.closing(self._objects_as_chunks(objects)) as each:
                    for obj, chunks in each:
                        self._send(fd, obj, chunks)
            served = True
        except BrokenPipeError:
            served = True  # the reader closed its end early: the epoch ends here, as on SageMaker
        except _Stopped:
            raise
        except BaseException as error:
            self._fail_holding_the_fifo(error)
        finally:
            os.close(fd)
            self.stats.busy_seconds += time.monotonic() - self.stats.reading_since
            self.stats.reading_since = None
            self.stats.epochs_served += served

    def _fail_holding_the_fifo(self, error: BaseException) -> None:
        """Reports `error` and returns only when the job stops the feeder.

        Closing the FIFO now would look like the end of a complete epoch: the script would train
        on a short one. The error fails the job, which stops the script, then the feeder."""
        self._report(error)
        self._stop.wait()
        raise _Stopped from None

    def _objects_as_chunks(
        self, objects: Iterable[DataObject]
    ) -> Iterator[tuple[DataObject, Iterator[bytes] | None]]:
        """Each object with its bytes, in order: runs of S3 objects fetched ahead, local files
        as they are read (None: a plain file, for sendfile)."""
        for is_local, run in itertools.groupby(objects, lambda obj: isinstance(obj, LocalObject)):
            if is_local:
                for obj in run:
                    plain = self.channel.compression == "None"
                    yield obj, None if plain else self._gunzipped(obj, self._local_chunks(obj))
                continue
            pieces = fetch.fetch_ahead(run, s3_client(own_retries=True), s3_settings())
            with contextlib.closing(pieces):  # an early end cancels the GETs not yet started
                for _, group in itertools.groupby(pieces, lambda piece: piece.index):
                    first = next(group)
                    chunks = (p.data for p in itertools.chain([first], group))
                    yield first.obj, self._gunzipped(first.obj, chunks)

    def _gunzipped(self, obj: DataObject, chunks: Iterator[bytes]) -> Iterator[bytes]:
        return gunzip(chunks, obj.uri) if self.channel.compression == "Gzip" else chunks

    @staticmethod
    def _local_chunks(obj: DataObject) -> Iterator[bytes]:
        with obj.open() as stream:
            yield from read_chunks(stream)

    def _send(self, fd: int, obj: DataObject, chunks: Iterator[bytes] | None) -> None:
        if chunks is None:
            assert isinstance(obj, LocalObject)
            self._sendfile(fd, obj)
            return
        for chunk in chunks:
            self._write_all(fd, chunk)

    def _sendfile(self, fd: int, obj: LocalObject) -> None:
        with obj.open() as source:
            offset = 0
            size = os.fstat(source.fileno()).st_size
            while sent := os.sendfile(fd, source.fileno(), offset, _SENDFILE_STEP):
                offset += sent
                self.stats.bytes += sent
                if self._stop.is_set():
                    raise _Stopped
            check_complete(obj.uri, offset, size)

    def _write_all(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
            self.stats.bytes += written
        if self._stop.is_set():
            raise _Stopped

    def _send_wrapped(self, fifo: Path, objects: Iterable[DataObject]) -> None:
        """Writes each object as one RecordIO record, framed by the Rust writer as dmlc does."""
        # The writer opens the FIFO by its path. Holding a read end of our own for that moment
        # makes the open return at once even if the script has already closed its end.
        guard = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            writer = RecordWriter(str(fifo), "RecordIO")
        finally:
            os.close(guard)
        try:
            with contextlib.closing(self._objects_as_chunks(objects)) as each:
                for obj, chunks in each:
                    record = b"".join(self._local_chunks(obj) if chunks is None else chunks)
                    writer.write(record)
                    self.stats.bytes += len(record)
                    if self._stop.is_set():
                        raise _Stopped
        except (BrokenPipeError, _Stopped):
            raise
        except BaseException as error:
            # The writer holds the FIFO open as `_serve` does, for the same reason.
            self._fail_holding_the_fifo(error)
        finally:
            with contextlib.suppress(BrokenPipeError):
                writer.close()
