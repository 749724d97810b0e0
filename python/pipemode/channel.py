"""A SageMaker Pipe Mode channel: the job's input config checks and the shared epoch counter.

Framework-free: `PipeModeDataset` builds on it, and numpy or PyTorch users can iterate epochs
with it directly::

    channel = PipeModeChannel("train")
    for epoch in range(3):
        for record in channel.next_epoch():
            ...

SageMaker serves epoch N of channel `c` as the FIFO `<pipe_dir>/c_N`. Which N comes next is kept
where `sagemaker_tensorflow` kept it, in `<state_dir>/.c-pipe_mode-state` (ASCII decimal, no
newline) under an `flock` on `<state_dir>/.c-pipe_mode-lock`, so every reader of the channel, in
this process or another, and an old `sagemaker_tensorflow` reader alike, reads the next epoch.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from pipemode._native import ExampleSpec
from pipemode.decode import DEFAULT_DENSE_BATCH_SIZE, DenseReader
from pipemode.errors import CorruptRecordError, PipeModeDatasetException
from pipemode.reader import DEFAULT_BATCH_SIZE, DEFAULT_MAX_BATCH_BYTES, RecordBatch, RecordReader
from pipemode.reader_base import DEFAULT_OPEN_TIMEOUT, PathLike, raise_if_exiting

__all__ = [
    "DEFAULT_OPEN_TIMEOUT",
    "RECORD_FORMATS",
    "ChannelEpoch",
    "Epoch",
    "PipeModeChannel",
    "default_config_dir",
    "default_pipe_dir",
    "default_state_dir",
    "fifo_name",
    "whole_lines",
]

# The native reader checks the format (and that only TFRecord skips records) again, with its own
# messages; a channel checks first because the incumbent's exact messages and order are the
# point here (see PipeModeChannel).
RECORD_FORMATS = ("RecordIO", "TFRecord", "TextLine")


def fifo_name(channel: str, epoch: int) -> str:
    """`<channel>_<epoch>`: the name of the FIFO that serves a channel's epoch, for the
    reader (`PipeModeChannel.fifo_path`) and the runner's feeder alike."""
    return f"{channel}_{epoch}"


def _sagemaker_base_dir() -> Path:
    # The training toolkit lets SAGEMAKER_BASE_DIR stand in for /opt/ml; a local runner uses it.
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))


def default_state_dir() -> Path:
    """`/opt/ml/pipe_state`, under `SAGEMAKER_BASE_DIR` when that is set."""
    return _sagemaker_base_dir() / "pipe_state"


def default_pipe_dir() -> Path:
    """`/opt/ml/input/data`: `$SM_INPUT_DIR/data`, else under `SAGEMAKER_BASE_DIR`."""
    input_dir = os.environ.get("SM_INPUT_DIR")
    return Path(input_dir) / "data" if input_dir else _sagemaker_base_dir() / "input" / "data"


def default_config_dir() -> Path:
    """`/opt/ml/input/config`: `$SM_INPUT_CONFIG_DIR`, else under `SAGEMAKER_BASE_DIR`."""
    config_dir = os.environ.get("SM_INPUT_CONFIG_DIR")
    return Path(config_dir) if config_dir else _sagemaker_base_dir() / "input" / "config"


class Epoch(NamedTuple):
    """An epoch claimed from a channel: its number (from 0) and the FIFO that serves it."""

    number: int
    path: Path


class PipeModeChannel:
    """One Pipe Mode input channel of a training job.

    Construction makes the checks `sagemaker_tensorflow.PipeModeDataset` made, in its order,
    with its messages and exception types: it creates `state_dir`, reads
    `<config_dir>/inputdataconfig.json` (`FileNotFoundError` when absent), then raises
    `PipeModeDatasetException` for a channel the job does not have, a channel not in Pipe mode,
    `max_corrupted_records_to_skip` with a format other than TFRecord, and an unknown
    `record_format`. Then it checks the options the reader takes (a bad `multipart` or
    `open_timeout` raises the reader's `PipeModeDatasetException`) and writes the epoch counter
    as 0 if no reader has yet.

    `None` for a folder means the SageMaker default (see `default_state_dir` and friends).
    `open_timeout` bounds the wait, in seconds, for an epoch's FIFO and its writer. `multipart`
    says how multipart RecordIO records are joined: "dmlc" as MXNet does (the magic word between
    parts), "concat" as `sagemaker_tensorflow` did.

    `attribute_names`, for a channel fed from an augmented manifest with RecordIO wrapping (one
    record per attribute): the names of `AttributeNames`, in order. Each epoch then yields one
    `{name: bytes}` dict per manifest line, and an epoch whose record count does not divide
    into whole lines is a `CorruptRecordError` naming the channel and epoch. Without RecordIO
    wrapping the attributes' bytes follow one another and cannot be told apart: a channel whose
    `RecordWrapperType` in inputdataconfig.json is not `RecordIO` is refused here, and where the
    config does not say, a framing error says that `attribute_names` needs it.
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
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        multipart: str = "dmlc",
        attribute_names: Sequence[str] | None = None,
    ) -> None:
        self.channel = channel
        self.record_format = record_format
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.pipe_dir = Path(pipe_dir) if pipe_dir is not None else default_pipe_dir()
        self.config_dir = Path(config_dir) if config_dir is not None else default_config_dir()
        self.max_corrupted_records_to_skip = max_corrupted_records_to_skip
        self.open_timeout = open_timeout
        self.multipart = multipart

        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.input_data_config = _read_input_data_config(self.config_dir)
        _check_pipe_channel(self.input_data_config, channel)
        if max_corrupted_records_to_skip > 0 and record_format != "TFRecord":
            raise PipeModeDatasetException(
                "max_corrupted_records_to_skip can only be set for record_format='TFRecord'"
            )
        if record_format not in RECORD_FORMATS:
            expected = ", ".join(RECORD_FORMATS)
            raise PipeModeDatasetException(
                f"Invalid record format: {record_format} (expected one of {expected})"
            )
        self.attribute_names = _checked_attribute_names(attribute_names, record_format)
        if self.attribute_names:
            _check_record_wrapping(self.input_data_config, channel)
        self.check_reader_options()
        self._start_counter()

    @property
    def state_file(self) -> Path:
        """`<state_dir>/.<channel>-pipe_mode-state`: the index of the next epoch to read."""
        return self.state_dir / f".{self.channel}-pipe_mode-state"

    @property
    def lock_file(self) -> Path:
        """`<state_dir>/.<channel>-pipe_mode-lock`: the `flock` guarding the state file."""
        return self.state_dir / f".{self.channel}-pipe_mode-lock"

    def fifo_path(self, index: int) -> Path:
        """`<pipe_dir>/<channel>_<index>`: the FIFO that serves epoch `index`."""
        return self.pipe_dir / fifo_name(self.channel, index)

    def peek_next_epoch(self) -> int:
        """The index the next claim will return, without claiming it."""
        with self._locked():
            return self._read_counter()

    def claim_next_epoch(self) -> Epoch:
        """Takes the next epoch for this reader alone and moves the shared counter past it."""
        raise_if_exiting()  # an epoch claimed while the interpreter exits would never be read
        with self._locked():
            index = self._read_counter()
            self._write_counter(index + 1)
        return Epoch(index, self.fifo_path(index))

    def next_epoch(self, batch_size: int = DEFAULT_BATCH_SIZE) -> ChannelEpoch:
        """The next epoch's records, claimed only when first read (see `ChannelEpoch`)."""
        return ChannelEpoch(self, batch_size)

    def open_reader(
        self,
        epoch: Epoch,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> RecordReader:
        """A `RecordReader` over a claimed epoch's FIFO, with this channel's options."""
        return RecordReader(
            epoch.path,
            self.record_format,
            batch_size=batch_size,
            max_batch_bytes=max_batch_bytes,
            **self._reader_options(epoch),
        )

    def open_dense_reader(
        self,
        epoch: Epoch,
        features: Any,
        decode_raw: Any = None,
        batch_size: int = DEFAULT_DENSE_BATCH_SIZE,
    ) -> DenseReader:
        """A `DenseReader` (Examples decoded into numpy batches) over a claimed epoch's FIFO."""
        return DenseReader(
            epoch.path,
            self.record_format,
            features=features,
            decode_raw=decode_raw,
            batch_size=batch_size,
            **self._reader_options(epoch),
        )

    def check_reader_options(
        self, batch_size: int = DEFAULT_BATCH_SIZE, spec: ExampleSpec | None = None
    ) -> None:
        """Raises what opening an epoch's reader with these options would, claiming nothing.

        The reader checks its options only when it is built, after its epoch is claimed: a bad
        one found then would have consumed the epoch. So one is built now, over no FIFO (it
        opens nothing), for the reader's own exception and message. With `spec`, the reader is
        a `DenseReader`.
        """
        unclaimed = Epoch(-1, Path(os.devnull))
        if spec is None:
            reader: RecordReader | DenseReader = self.open_reader(unclaimed, batch_size)
        else:
            reader = self.open_dense_reader(unclaimed, spec, batch_size=batch_size)
        reader.close()

    def read_batches(self, reader: RecordReader) -> Iterator[RecordBatch]:
        """`reader.batches()`; with `attribute_names`, a framing error also says that they need
        RecordIO wrapping (an unwrapped stream fails there, at its first bytes)."""
        if not self.attribute_names:
            yield from reader.batches()
            return
        try:
            yield from reader.batches()
        except CorruptRecordError as error:
            raise CorruptRecordError(
                f"{error}; attribute_names needs the channel's RecordWrapperType: RecordIO (one "
                "record per attribute): without it the attributes' bytes follow one another and "
                "cannot be split into lines",
                error.path,
                error.offset,
            ) from None

    def _reader_options(self, epoch: Epoch) -> dict[str, Any]:
        return {
            "max_corrupted_records_to_skip": self.max_corrupted_records_to_skip,
            "multipart": self.multipart,
            "open_timeout": self.open_timeout,
            "name": self.describe(epoch),
        }

    def check_whole_lines(self, records: int, epoch: Epoch, offset: int) -> None:
        """Raises unless an epoch's `records` make whole manifest lines (`attribute_names`)."""
        names = self.attribute_names
        if names and records % len(names):
            raise CorruptRecordError(
                f"{self.describe(epoch)}: {records} records do not make whole lines of "
                f"{len(names)} attributes {list(names)}: the last line has only "
                f"{records % len(names)}; the channel's AttributeNames must be these, with "
                "RecordWrapperType=RecordIO",
                str(epoch.path),
                offset,
            )

    def describe(self, epoch: Epoch) -> str:
        """How messages name an epoch (the reader adds its FIFO's path)."""
        return f"channel {self.channel!r} epoch {epoch.number}"

    def __repr__(self) -> str:
        return (
            f"PipeModeChannel({self.channel!r}, record_format={self.record_format!r}, "
            f"pipe_dir='{self.pipe_dir}', state_dir='{self.state_dir}')"
        )

    def _start_counter(self) -> None:
        # Never reset: a re-created reader continues with the next epoch, as SageMaker expects.
        with self._locked():
            if not self.state_file.exists():
                self._write_counter(0)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _read_counter(self) -> int:
        raw = self.state_file.read_bytes()
        # ASCII digits only: int() would also take "-3", " 3" or "1_0", and a negative epoch
        # would name a FIFO no writer serves.
        if not (raw.isdigit() and raw.isascii()):
            shown = raw[:40].decode("ascii", "backslashreplace")
            raise PipeModeDatasetException(
                f"Channel {self.channel} state file {self.state_file} holds {shown!r}, "
                "not an epoch index (ASCII decimal digits); remove it to start again from epoch 0"
            )
        return int(raw)

    def _write_counter(self, index: int) -> None:
        # A new file renamed over the old one, under the lock: a process killed while it claims
        # leaves the old count or the new one, never an empty file (truncating and writing in
        # place left an empty file on 132 of 200 kills). Readers that only flock, like the
        # incumbent, open the file after taking the lock, so they see one whole file either way.
        # One temporary name is enough: only the lock holder writes it.
        partial = self.state_file.with_name(self.state_file.name + ".partial")
        partial.write_bytes(str(index).encode("ascii"))
        os.replace(partial, self.state_file)


class ChannelEpoch:
    """One epoch of a channel that claims its FIFO only when first read.

    Iterating yields each record as `bytes`; `batches()` yields `RecordBatch`es. Creating one and
    never reading it consumes no epoch. Once claimed, `epoch` names its number and FIFO. An epoch
    is read once: SageMaker does not serve a FIFO twice.
    """

    def __init__(self, channel: PipeModeChannel, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        channel.check_reader_options(batch_size)
        self.channel = channel
        self.batch_size = batch_size
        self.epoch: Epoch | None = None
        # What the epoch's reader delivered, once it has ended.
        self.records_read = 0
        self.bytes_read = 0

    def batches(self) -> Iterator[RecordBatch]:
        if self.epoch is not None:
            raise PipeModeDatasetException(
                f"{self.channel.describe(self.epoch)} ({self.epoch.path}) was already read; "
                "ask the channel for the next epoch"
            )
        self.epoch = self.channel.claim_next_epoch()
        reader = self.channel.open_reader(self.epoch, self.batch_size)
        try:
            yield from self.channel.read_batches(reader)
        finally:
            self.records_read, self.bytes_read = reader.records_read, reader.bytes_read
            reader.close()

    def __iter__(self) -> Iterator[Any]:
        """Each record as `bytes`; with `attribute_names`, each line as `{name: bytes}`."""
        if self.channel.attribute_names:
            yield from self.lines()
            return
        for batch in self.batches():
            yield from batch.to_list()

    def lines(self) -> Iterator[dict[str, bytes]]:
        """Each manifest line as `{name: bytes}` (needs the channel's `attribute_names`)."""
        names = self.channel.attribute_names
        if not names:
            raise PipeModeDatasetException("lines() needs the channel's attribute_names")
        yield from whole_lines(self.batches(), names)
        assert self.epoch is not None  # claimed by the first read, ended by the loop above
        self.channel.check_whole_lines(self.records_read, self.epoch, self.bytes_read)


def whole_lines(batches: Iterable[RecordBatch], names: Sequence[str]) -> Iterator[dict[str, bytes]]:
    """Groups records into `{name: record}` lines, `len(names)` records each, across batches.

    Records left over at the end (a partial line) are not yielded: the caller checks the count.
    """
    width = len(names)
    carried: list[bytes] = []
    for batch in batches:
        records = carried + batch.to_list() if carried else batch.to_list()
        whole = len(records) - len(records) % width
        for start in range(0, whole, width):
            yield dict(zip(names, records[start : start + width]))
        carried = records[whole:]


def _checked_attribute_names(
    names: Sequence[str] | None, record_format: str
) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str) or not names or len(names) > 16:
        raise PipeModeDatasetException(
            f"attribute_names must be a list of 1 to 16 names, as AttributeNames, not {names!r}"
        )
    if not all(isinstance(name, str) and name for name in names) or len(set(names)) < len(names):
        raise PipeModeDatasetException(
            f"attribute_names must be distinct non-empty strings, not {list(names)!r}"
        )
    if record_format != "RecordIO":
        raise PipeModeDatasetException(
            "attribute_names needs record_format='RecordIO': only RecordIO wrapping "
            f"(RecordWrapperType=RecordIO) keeps each attribute apart, not {record_format!r}"
        )
    return tuple(names)


def _check_record_wrapping(input_data_config: dict[str, dict[str, str]], channel: str) -> None:
    # SageMaker writes RecordWrapperType ("None" or "RecordIO") for every channel, and so does
    # the runner; a config without it (written by hand) leaves the check to the framing error.
    wrapping = input_data_config[channel].get("RecordWrapperType")
    if wrapping is not None and wrapping.lower() != "recordio":
        raise PipeModeDatasetException(
            f"Channel {channel} has RecordWrapperType {wrapping} in inputdataconfig.json: "
            "attribute_names needs RecordWrapperType: RecordIO (one record per attribute; "
            'TrainingInput(..., record_wrapping="RecordIO")): without it the attributes\' '
            "bytes follow one another and cannot be told apart"
        )


def _read_input_data_config(config_dir: Path) -> dict[str, dict[str, str]]:
    with open(config_dir / "inputdataconfig.json", encoding="utf-8") as config:
        return json.load(config)


def _check_pipe_channel(input_data_config: dict[str, dict[str, str]], channel: str) -> None:
    if channel not in input_data_config:
        raise PipeModeDatasetException(
            f"Channel {channel} not found in Training Job InputDataConfig"
        )
    if input_data_config[channel].get("TrainingInputMode", "").lower() != "pipe":
        raise PipeModeDatasetException(f"Channel {channel} is not a PipeMode channel")
