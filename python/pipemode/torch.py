"""PyTorch: a SageMaker Pipe Mode channel as a `torch.utils.data.IterableDataset`.

The only pipemode module that imports torch. It puts the framework-free pieces together:
`PipeModeChannel` for the job's checks and the shared epoch counter, `RecordReader` for raw
records, `DenseReader` for tf.train.Example records decoded in Rust into numpy batches, which
reach torch through `torch.from_numpy`, without a copy.

One iteration reads one epoch of the channel: it claims the epoch's FIFO through the channel's
state file when it first reads, so DataLoader re-creating its workers every epoch continues
with the next epoch, and an iterator that is made and never read consumes nothing.

A Pipe Mode FIFO can be read by one process only, yet DataLoader runs the dataset's iterator in
each of its workers, and torchrun runs the script once per GPU. So one process reads, and deals
what it reads to every other (the seats: DataLoader workers, times local ranks with
`local_ranks="deal"`), as torchdata's `ShardingRoundRobinDispatcher` does for a source that
cannot be replicated: the first seat (worker 0 of local rank 0) reads the epoch on a thread and
sends run after run, in turn, to each seat over a Unix socket; each seat applies `transform` to
its runs' items, in parallel with the others. Splitting the stream by position in every worker,
as webdataset does, would need each worker to read the whole FIFO: impossible here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pickle
import queue
import socket
import struct
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

import numpy as np
import torch
import torch.distributed
from torch.utils.data import IterableDataset, get_worker_info

from pipemode._native import ExampleSpec
from pipemode.channel import Epoch, PipeModeChannel, whole_lines
from pipemode.decode import DEFAULT_DENSE_BATCH_SIZE, FeatureColumn, feature_columns
from pipemode.errors import PipeModeDatasetException
from pipemode.reader import RecordBatch, RecordReader
from pipemode.reader_base import DEFAULT_OPEN_TIMEOUT, PathLike

__all__ = ["PipeModeDataset", "to_tensors"]

Transform = Callable[[Any], Any]

# How `local_ranks` may be set, and what each means (see PipeModeDataset).
LOCAL_RANKS = ("deal", "own")
# How often a dealer, or the consumer of its own seat, waiting for something checks whether it
# was stopped (or its thread ended). Seats and dealers wait for each other up to open_timeout.
_POLL_SECONDS = 0.2
# Runs the dealer may hold ready for its own seat ahead of it: the others' wait in their sockets.
_OWN_QUEUE_RUNS = 2


class PipeModeDataset(IterableDataset):  # type: ignore[type-arg]
    """The records of a Pipe Mode channel, one epoch per iteration, for `DataLoader`.

    `channel`, `record_format` (`'RecordIO'`, `'TFRecord'` or `'TextLine'`), the folders
    (None: SageMaker's, under `SAGEMAKER_BASE_DIR`, `SM_INPUT_DIR` and `SM_INPUT_CONFIG_DIR`
    when set), `max_corrupted_records_to_skip`, `open_timeout` and `multipart` are those of
    `PipeModeChannel`, checked at construction with its messages.

    Raw records (no `features`): each item is one record as `bytes`, or `transform(record)`.
    With `DataLoader(num_workers=N)`, N > 1, records are dealt to the workers in runs of
    `batch_size`: set it to the DataLoader's `batch_size` (1 when that is None) and each
    DataLoader batch holds consecutive records, in the channel's order.

    `features=` (a `tf.io.parse_example` dict of `FixedLenFeature`s, `decode_raw={name: dtype}`
    for string features holding raw numbers): the Examples are decoded in Rust and each item is
    one batch of `batch_size` records (the last of an epoch may be shorter), a dict of tensors
    `[rows, *shape]` that share the decoder's buffers (string features stay numpy object arrays
    of `bytes`), or `transform(batch)`. Use `DataLoader(dataset, batch_size=None)`.

    `attribute_names=` (an augmented manifest's `AttributeNames`, RecordIO-wrapped): each item
    is one manifest line, `{name: bytes}` (or `transform(line)`); with several workers, lines are
    dealt in runs of `batch_size` lines, never split. An epoch whose records do not make whole
    lines raises a `CorruptRecordError` naming the channel and epoch.

    Whatever `num_workers` and `persistent_workers` are, each record of an epoch is yielded
    once, in the channel's order as above. Under torchrun, several local ranks
    (`LOCAL_WORLD_SIZE` > 1) must say how they share the host's FIFOs: `local_ranks="deal"`,
    local rank 0 reads and deals runs to every local rank in turn (rank r gets runs r, r + n,
    ...; every local rank must iterate the dataset); or `local_ranks="own"`, this rank reads
    the channel alone (a channel per rank, or one that only this rank reads, such as eval on
    rank 0), and a second process that asks to own it is refused.
    """

    def __init__(
        self,
        channel: str,
        record_format: str = "RecordIO",
        state_dir: PathLike | None = None,
        pipe_dir: PathLike | None = None,
        config_dir: PathLike | None = None,
        max_corrupted_records_to_skip: int = 0,
        *,
        features: Mapping[str, Any] | None = None,
        decode_raw: Mapping[str, Any] | None = None,
        batch_size: int = DEFAULT_DENSE_BATCH_SIZE,
        transform: Transform | None = None,
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        multipart: str = "dmlc",
        local_ranks: str | None = None,
        attribute_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.pipe_channel = PipeModeChannel(
            channel,
            record_format,
            state_dir=state_dir,
            pipe_dir=pipe_dir,
            config_dir=config_dir,
            max_corrupted_records_to_skip=max_corrupted_records_to_skip,
            open_timeout=open_timeout,
            multipart=multipart,
            attribute_names=attribute_names,
        )
        if features is not None and attribute_names is not None:
            raise PipeModeDatasetException("attribute_names= and features= do not go together")
        if batch_size < 1:
            raise PipeModeDatasetException(f"batch_size must be at least 1, not {batch_size}")
        self.batch_size = batch_size
        self.transform = transform
        # The decoder's normalised columns, not a native ExampleSpec: a dataset is pickled into
        # DataLoader workers started with "spawn", and each process builds its own spec.
        self._columns: list[FeatureColumn] | None = None
        if features is None:
            if decode_raw is not None:
                raise PipeModeDatasetException(
                    "decode_raw= needs features=: it names features to decode"
                )
            self.pipe_channel.check_reader_options()
        else:
            self._columns = feature_columns(features, decode_raw)
            # Checked now, so a bad spec or batch size fails here, before any epoch is claimed.
            self.pipe_channel.check_reader_options(batch_size, ExampleSpec(self._columns))
        self.local_ranks = _local_ranks_mode(channel, local_ranks)
        if self.local_ranks == "own":
            _own_channel(self.pipe_channel)

    @property
    def channel(self) -> str:
        return self.pipe_channel.channel

    @property
    def dense(self) -> bool:
        """True with `features=`: items are batches of decoded Examples."""
        return self._columns is not None

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing below runs, and no epoch is claimed, until the first next().
        seat = _Seat.here(self.local_ranks == "deal")
        if seat.count == 1:
            items = self._read_alone()
        elif seat.index == 0:
            items = self._lead(seat)
        else:
            items = self._follow(seat)
        if self.transform is None:
            yield from items
        else:
            yield from map(self.transform, items)

    # Reading.

    def _read_alone(self) -> Iterator[Any]:
        epoch = self.pipe_channel.claim_next_epoch()
        if self.dense:
            yield from map(to_tensors, self._decoded(epoch))
        else:
            with self.pipe_channel.open_reader(epoch) as reader:
                names = self.pipe_channel.attribute_names
                if names:
                    yield from whole_lines(self.pipe_channel.read_batches(reader), names)
                    self._check_whole_lines(reader, epoch)
                    return
                for batch in reader.batches():
                    yield from batch.to_list()

    def _decoded(self, epoch: Epoch) -> Iterator[dict[str, np.ndarray]]:
        spec = ExampleSpec(self._columns)
        reader = self.pipe_channel.open_dense_reader(epoch, spec, batch_size=self.batch_size)
        with reader:
            yield from reader

    def _runs(self) -> Iterator[Any]:
        """The epoch as the units a dealer deals: runs of `batch_size` raw records (lists of
        `bytes`), or decoded batches (dicts of numpy arrays)."""
        epoch = self.pipe_channel.claim_next_epoch()
        if self.dense:
            yield from self._decoded(epoch)
        else:
            with self.pipe_channel.open_reader(epoch) as raw:
                names = self.pipe_channel.attribute_names
                if not names:
                    yield from _record_runs(raw.batches(), self.batch_size)
                    return
                # Runs of whole lines, so that no line is split between two workers.
                batches = self.pipe_channel.read_batches(raw)
                for run in _record_runs(batches, self.batch_size * len(names)):
                    yield _lines_of(run, names)
                self._check_whole_lines(raw, epoch)

    def _check_whole_lines(self, reader: RecordReader, epoch: Epoch) -> None:
        self.pipe_channel.check_whole_lines(reader.records_read, epoch, reader.bytes_read)

    def _lead(self, seat: _Seat) -> Iterator[Any]:
        dealer = _Dealer(self, seat)
        try:
            for run in dealer.own_runs():
                yield from self._items_of(run)
        finally:
            dealer.close()

    def _follow(self, seat: _Seat) -> Iterator[Any]:
        with _DealtRuns(self, seat) as runs:
            for run in runs:
                yield from self._items_of(run)

    def _items_of(self, run: Any) -> Iterable[Any]:
        return [to_tensors(run)] if self.dense else run

    def describe(self) -> str:
        return f"channel {self.channel!r}"

    def __repr__(self) -> str:
        kind = "dense batches" if self.dense else "raw records"
        return f"PipeModeDataset({self.pipe_channel!r}, {kind})"


def to_tensors(batch: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Numeric columns as tensors over the same memory (`torch.from_numpy`); string columns,
    which torch has no tensor for, stay numpy object arrays of `bytes`."""
    return {
        name: column if column.dtype == object else torch.from_numpy(column)
        for name, column in batch.items()
    }


def _lines_of(records: list[bytes], names: Sequence[str]) -> list[dict[str, bytes]]:
    """The whole lines among `records` (a partial line at the end is left to the count check)."""
    width = len(names)
    return [
        dict(zip(names, records[start : start + width]))
        for start in range(0, len(records) - width + 1, width)
    ]


def _record_runs(batches: Iterable[RecordBatch], size: int) -> Iterator[list[bytes]]:
    """A reader's records in lists of `size` (the last may be shorter), across its batches."""
    pending: list[bytes] = []
    for batch in batches:
        records = batch.to_list()
        start = min(size - len(pending), len(records)) if pending else 0
        if pending:
            pending.extend(records[:start])
            if len(pending) < size:
                continue
            yield pending
        while start + size <= len(records):
            yield records[start : start + size]
            start += size
        pending = records[start:]
    if pending:
        yield pending


# Where an iteration runs.


@dataclass(frozen=True)
class _Seat:
    """One reader of the epoch: a DataLoader worker (or the main process) of a local rank.

    Runs are dealt rank first: run g goes to local rank `g % ranks`, and within it to worker
    `(g // ranks) % workers`, the worker DataLoader asks next, so each rank sees its runs in
    the channel's order.
    """

    rank: int
    ranks: int
    worker: int
    workers: int

    @classmethod
    def here(cls, dealing_ranks: bool) -> _Seat:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, ranks = (_local_rank(), _local_world_size()) if dealing_ranks else (0, 1)
        return cls(rank, ranks, worker, workers)

    @property
    def index(self) -> int:
        return self.rank * self.workers + self.worker

    @property
    def count(self) -> int:
        return self.ranks * self.workers

    def of_run(self, run: int) -> int:
        """The index of the seat that gets run number `run`."""
        rank, worker = run % self.ranks, (run // self.ranks) % self.workers
        return rank * self.workers + worker

    def describe(self) -> str:
        where = f"local rank {self.rank} of {self.ranks}"
        return f"{where}, DataLoader worker {self.worker} of {self.workers}"


def _local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _local_ranks_mode(channel: str, local_ranks: str | None) -> str | None:
    """Checks `local_ranks` against the processes torchrun (or torch.distributed) started."""
    if local_ranks is not None and local_ranks not in LOCAL_RANKS:
        raise PipeModeDatasetException(
            f"local_ranks must be one of {', '.join(map(repr, LOCAL_RANKS))} or None, "
            f"not {local_ranks!r}"
        )
    if "LOCAL_WORLD_SIZE" not in os.environ and _distributed_world_size() > 1:
        raise PipeModeDatasetException(
            f"channel {channel!r}: torch.distributed runs {_distributed_world_size()} ranks but "
            "LOCAL_WORLD_SIZE and LOCAL_RANK are not set, so which ranks share this host's "
            "Pipe Mode FIFOs is unknown: set them (torchrun does)"
        )
    if _local_world_size() > 1 and local_ranks is None:
        raise PipeModeDatasetException(
            f"channel {channel!r}: {_local_world_size()} local ranks (LOCAL_WORLD_SIZE) would "
            "read this host's Pipe Mode FIFO at once, and a FIFO can be read by one process "
            "only. Pass local_ranks='deal' (local rank 0 reads and deals batches to every "
            "local rank, which must all iterate the dataset), or local_ranks='own' for a "
            "channel only this rank reads (a channel per rank, or eval on one rank)"
        )
    return local_ranks if _local_world_size() > 1 else None


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1


# The channels this process owns (local_ranks="own"): the owner file's path -> its locked fd,
# by pid: a forked child inherits the dict, not the ownership (a DataLoader worker, which has
# the lock through its parent's descriptor, makes no dataset).
_OWNED: dict[tuple[int, str], int] = {}


def _own_channel(channel: PipeModeChannel) -> None:
    """Takes the channel for this process alone, for as long as it lives, or refuses.

    An `flock` on `<state_dir>/.<channel>-pipe_mode-owner`, which names its holder: released
    when the process (and the DataLoader workers it forked) exit. A process that owns the
    channel already (a dataset made again) keeps its lock.
    """
    path = str(channel.state_dir.resolve() / f".{channel.channel}-pipe_mode-owner")
    if (os.getpid(), path) in _OWNED:
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace")
        os.close(fd)
        raise PipeModeDatasetException(
            f"channel {channel.channel!r} is already read by another process on this host "
            f"({holder}), and a Pipe Mode FIFO can be read by one process only: give each "
            "rank a channel of its own, or use local_ranks='deal' on every rank"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"local rank {_local_rank()}, pid {os.getpid()}".encode())
    _OWNED[os.getpid(), path] = fd


# Dealing: one seat reads, every seat gets runs in turn.


def _dealer_address(dataset: PipeModeDataset) -> str:
    """An abstract Unix socket name (nothing on disk) that every seat derives alike."""
    state = dataset.pipe_channel.state_file.resolve()
    key = hashlib.sha256(f"{os.getuid()}:{state}".encode()).hexdigest()[:32]
    return f"\0pipemode-torch-{key}"


def _deadline(dataset: PipeModeDataset) -> float | None:
    timeout = dataset.pipe_channel.open_timeout
    return None if timeout is None else time.monotonic() + timeout


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


_HEADER = struct.Struct("!Q")


def _send(sock: socket.socket, message: tuple[str, Any]) -> None:
    data = pickle.dumps(message, protocol=5)
    sock.sendall(_HEADER.pack(len(data)))
    sock.sendall(data)


def _receive(sock: socket.socket) -> tuple[str, Any] | None:
    """The next message, or None at the end of the stream."""
    header = _receive_exactly(sock, _HEADER.size)
    if header is None:
        return None
    data = _receive_exactly(sock, _HEADER.unpack(header)[0])
    if data is None:
        return None
    message: tuple[str, Any] = pickle.loads(data)
    return message


def _receive_exactly(sock: socket.socket, size: int) -> bytearray | None:
    buffer = bytearray(size)
    view = memoryview(buffer)
    while view:
        received = sock.recv_into(view)
        if received == 0:
            return None
        view = view[received:]
    return buffer


def _check_same_user(sock: socket.socket) -> None:
    # The socket's name is guessable: only a process of this user may deal or be dealt to.
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", credentials)
    if uid != os.getuid():
        sock.close()
        raise PipeModeDatasetException(f"a process of user {uid} answered on pipemode's socket")


class _Stopped(Exception):
    pass


class _Dealer:
    """The first seat's reader: a thread that claims the epoch once every seat has joined, reads
    it, and deals its runs in turn, to its own seat through a queue and to the others over their
    sockets; then the end, or the error, to each."""

    def __init__(self, dataset: PipeModeDataset, seat: _Seat) -> None:
        self.dataset = dataset
        self.seat = seat
        self.own: queue.Queue[tuple[str, Any]] = queue.Queue(_OWN_QUEUE_RUNS)
        self.stop = threading.Event()
        self.peers: dict[int, socket.socket] = {}
        self.listener = self._listen(_deadline(dataset))
        self.thread = threading.Thread(
            target=self._deal, name=f"pipemode-dealer-{dataset.channel}", daemon=True
        )
        self.thread.start()

    def _listen(self, deadline: float | None) -> socket.socket:
        address = _dealer_address(self.dataset)
        while True:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                listener.bind(address)
            except OSError:
                listener.close()
                if _expired(deadline):
                    raise PipeModeDatasetException(
                        f"{self.dataset.describe()}: another reader on this host is dealing "
                        "this channel's epoch (two DataLoader iterators over one channel at "
                        "once?)"
                    ) from None
                time.sleep(0.01)
                continue
            listener.listen(self.seat.count)
            listener.settimeout(_POLL_SECONDS)
            return listener

    def own_runs(self) -> Iterator[Any]:
        while True:
            try:
                kind, payload = self.own.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self.thread.is_alive() and self.own.empty():
                    raise RuntimeError("pipemode's dealer thread ended without a word") from None
                continue
            if kind == "end":
                return
            if kind == "error":
                raise payload
            yield payload

    def _deal(self) -> None:
        run = 0
        try:
            self._gather()
            for unit in self.dataset._runs():
                self._deliver(self.seat.of_run(run), ("run", unit))
                run += 1
            for index in self._own_seat_last():
                self._deliver(index, ("end", None))
        except _Stopped:
            pass
        except BaseException as error:  # delivered where the consumer meets it, in order
            self._fail(self.seat.of_run(run), error)
        finally:
            self._close_sockets()

    def _own_seat_last(self) -> list[int]:
        # Once its own seat has the last word, the dealer's consumer closes the dealer: every
        # other seat must have had its word by then.
        return [*range(1, self.seat.count), 0]

    def _gather(self) -> None:
        deadline = _deadline(self.dataset)
        while len(self.peers) < self.seat.count - 1:
            if self.stop.is_set():
                raise _Stopped
            if _expired(deadline):
                missing = self.seat.count - 1 - len(self.peers)
                raise PipeModeDatasetException(
                    f"{self.dataset.describe()}: {missing} of the {self.seat.count} readers "
                    "that share the channel (DataLoader workers x local ranks) did not start "
                    f"within open_timeout ({self.dataset.pipe_channel.open_timeout:g} s); with "
                    "local_ranks='deal' every local rank must iterate the dataset, with the "
                    "same num_workers"
                )
            try:
                peer, _ = self.listener.accept()
            except socket.timeout:
                continue
            self._welcome(peer)
        self.listener.close()

    def _welcome(self, peer: socket.socket) -> None:
        peer.settimeout(None)
        _check_same_user(peer)
        hello = _receive(peer)
        if hello is None:
            peer.close()
            return
        index, count = hello[1]
        if count != self.seat.count or index in self.peers or not 0 < index < count:
            _send(peer, ("error", _layout_error(self.dataset, count, self.seat.count)))
            peer.close()
            raise _layout_error(self.dataset, count, self.seat.count)
        self.peers[index] = peer

    def _deliver(self, index: int, message: tuple[str, Any]) -> None:
        if index == 0:
            while True:
                if self.stop.is_set():
                    raise _Stopped
                try:
                    self.own.put(message, timeout=_POLL_SECONDS)
                    return
                except queue.Full:
                    continue
        try:
            _send(self.peers[index], message)
        except OSError as error:
            if self.stop.is_set():
                raise _Stopped from None
            raise PipeModeDatasetException(
                f"{self.dataset.describe()}: seat {index} of {self.seat.count} stopped reading "
                f"its runs ({error.strerror})"
            ) from None

    def _fail(self, index: int, error: BaseException) -> None:
        """The error to the seat whose turn it was, the end to every other."""
        try:
            pickle.dumps(error, protocol=5)
        except Exception:  # it must cross to another process as it is, or as its message
            error = RuntimeError(f"{type(error).__name__}: {error}")
        for seat in self._own_seat_last():
            message = ("error", error) if seat == index else ("end", None)
            try:
                self._deliver(seat, message)
            except _Stopped:
                return
            except PipeModeDatasetException:
                continue  # that seat is gone: the others still get their word

    def _close_sockets(self) -> None:
        self.listener.close()
        for peer in self.peers.values():
            peer.close()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            # Closed early: shutting the sockets down wakes a send blocked on a seat that
            # stopped reading. (What a seat has received stays readable.)
            for peer in list(self.peers.values()):
                with contextlib.suppress(OSError):
                    peer.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)


def _layout_error(dataset: PipeModeDataset, theirs: int, ours: int) -> PipeModeDatasetException:
    return PipeModeDatasetException(
        f"{dataset.describe()}: a reader expected {theirs} seats (DataLoader workers x local "
        f"ranks) where the dealer has {ours}: every local rank must use the same num_workers"
    )


class _DealtRuns:
    """A seat's runs from the dealer: joins it, then yields each run until the end."""

    def __init__(self, dataset: PipeModeDataset, seat: _Seat) -> None:
        self.dataset = dataset
        self.seat = seat
        self.sock = self._join(_deadline(dataset))

    def _join(self, deadline: float | None) -> socket.socket:
        address = _dealer_address(self.dataset)
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.connect(address)
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
                if _expired(deadline):
                    self._no_dealer()
                time.sleep(0.005)
                continue
            _check_same_user(sock)
            _send(sock, ("hello", (self.seat.index, self.seat.count)))
            return sock

    def _no_dealer(self) -> NoReturn:
        raise PipeModeDatasetException(
            f"{self.dataset.describe()} ({self.seat.describe()}): the reader that deals this "
            "channel (DataLoader worker 0 of local rank 0) did not start within open_timeout "
            f"({self.dataset.pipe_channel.open_timeout:g} s); with local_ranks='deal' every "
            "local rank must iterate the dataset"
        )

    def __enter__(self) -> Iterator[Any]:
        return self._runs()

    def _runs(self) -> Iterator[Any]:
        while True:
            message = _receive(self.sock)
            if message is None:
                raise PipeModeDatasetException(
                    f"{self.dataset.describe()} ({self.seat.describe()}): the reader that deals "
                    "this channel (DataLoader worker 0 of local rank 0) stopped before the "
                    "epoch ended"
                )
            kind, payload = message
            if kind == "end":
                return
            if kind == "error":
                raise payload
            yield payload

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
