"""PyTorch: a SageMaker Pipe Mode channel as a `torch.utils.data.IterableDataset`.

The only pipemode module that imports torch. It puts the framework-free pieces together:
`PipeModeChannel` for the job's checks and the shared epoch counter, `RecordReader` for raw
records, `DenseReader` for tf.train.Example records decoded in Rust into numpy batches, which
reach torch through `torch.from_numpy`, without a copy.

One iteration reads one epoch of the channel: it claims the epoch's FIFO through the channel's
state file when it first reads, so DataLoader re-creating its workers every epoch continues
with the next epoch, and an iterator that is made and never read consumes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipemode._native import ExampleSpec
from pipemode.channel import Epoch, PipeModeChannel
from pipemode.decode import DEFAULT_DENSE_BATCH_SIZE, FeatureColumn, feature_columns
from pipemode.errors import PipeModeDatasetException
from pipemode.reader_base import DEFAULT_OPEN_TIMEOUT, PathLike

__all__ = ["PipeModeDataset", "to_tensors"]

Transform = Callable[[Any], Any]


class PipeModeDataset(IterableDataset):  # type: ignore[type-arg]
    """The records of a Pipe Mode channel, one epoch per iteration, for `DataLoader`.

    `channel`, `record_format` (`'RecordIO'`, `'TFRecord'` or `'TextLine'`), the folders
    (None: SageMaker's, under `SAGEMAKER_BASE_DIR`, `SM_INPUT_DIR` and `SM_INPUT_CONFIG_DIR`
    when set), `max_corrupted_records_to_skip`, `open_timeout` and `multipart` are those of
    `PipeModeChannel`, checked at construction with its messages.

    Raw records (no `features`): each item is one record as `bytes`, or `transform(record)`.
    Use `DataLoader(dataset, batch_size=B)` and a `collate_fn` that suits the items.

    `features=` (a `tf.io.parse_example` dict of `FixedLenFeature`s, `decode_raw={name: dtype}`
    for string features holding raw numbers): the Examples are decoded in Rust and each item is
    one batch of `batch_size` records (the last of an epoch may be shorter), a dict of tensors
    `[rows, *shape]` that share the decoder's buffers (string features stay numpy object arrays
    of `bytes`), or `transform(batch)`. Use `DataLoader(dataset, batch_size=None)`.
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
        )
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

    @property
    def channel(self) -> str:
        return self.pipe_channel.channel

    @property
    def dense(self) -> bool:
        """True with `features=`: items are batches of decoded Examples."""
        return self._columns is not None

    def __iter__(self) -> Iterator[Any]:
        # A generator: nothing below runs, and no epoch is claimed, until the first next().
        _refuse_several_readers(self.channel)
        epoch = self.pipe_channel.claim_next_epoch()
        items = self._dense_batches(epoch) if self.dense else self._records(epoch)
        if self.transform is None:
            yield from items
        else:
            yield from map(self.transform, items)

    def _records(self, epoch: Epoch) -> Iterator[bytes]:
        with self.pipe_channel.open_reader(epoch) as reader:
            for batch in reader.batches():
                yield from batch.to_list()

    def _dense_batches(self, epoch: Epoch) -> Iterator[dict[str, Any]]:
        spec = ExampleSpec(self._columns)
        reader = self.pipe_channel.open_dense_reader(epoch, spec, batch_size=self.batch_size)
        with reader:
            for batch in reader:
                yield to_tensors(batch)

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


def _refuse_several_readers(channel: str) -> None:
    info = get_worker_info()
    if info is not None and info.num_workers > 1:
        raise PipeModeDatasetException(
            f"channel {channel!r}: DataLoader(num_workers={info.num_workers}) would read one "
            "Pipe Mode FIFO from several processes; use num_workers=0 or 1"
        )
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if local_ranks > 1:
        raise PipeModeDatasetException(
            f"channel {channel!r}: {local_ranks} ranks on this host (LOCAL_WORLD_SIZE) would "
            "read one Pipe Mode FIFO at once"
        )
