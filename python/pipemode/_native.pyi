"""Type stubs of the private native module; the public API is in the pipemode package."""

import os
from collections.abc import Iterator, Sequence
from typing import Any, final

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

_Path = str | os.PathLike[str]

__version__: str
__all__ = [
    "DEFAULT_BATCHES_PER_BLOCK",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_DENSE_BATCH_SIZE",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BLOCK_BYTES",
    "DEFAULT_OPEN_TIMEOUT",
    "DEFAULT_PREFETCH",
    "AlignedColumn",
    "DenseReader",
    "ExampleSpec",
    "RecordBatch",
    "RecordReader",
    "RecordWriter",
    "__version__",
    "decode_examples",
    "encode_example",
]

# --- The core's defaults, each defined once there; the classes below take no defaults ---

DEFAULT_BATCH_SIZE: int  # records per RecordBatch
DEFAULT_MAX_BATCH_BYTES: int  # payload bytes per RecordBatch
DEFAULT_BUFFER_SIZE: int  # the read buffer, and the FIFO's pipe size asked for
DEFAULT_PREFETCH: int  # batches the reader thread may hold ready
DEFAULT_OPEN_TIMEOUT: float | None  # seconds to wait for the path and the FIFO's writer
DEFAULT_DENSE_BATCH_SIZE: int  # rows per dense batch
DEFAULT_BATCHES_PER_BLOCK: int  # dense batches per block
DEFAULT_MAX_BLOCK_BYTES: int  # a block ends after the batch that brings it to this size

# --- The counters both readers share ---

@disjoint_base
class _ReaderBase:
    """The base of RecordReader and DenseReader: closing, waiting, their thread's counters."""

    def close(self) -> None: ...
    def wait_ready(self, timeout: float) -> bool: ...
    @property
    def started(self) -> bool: ...
    @property
    def records_read(self) -> int: ...
    @property
    def bytes_read(self) -> int: ...
    @property
    def records_skipped(self) -> int: ...
    @property
    def pipe_wait_seconds(self) -> float: ...
    @property
    def consumer_wait_seconds(self) -> float: ...

# --- The Example decoder (pipemode.decode) ---

@final
class ExampleSpec:
    """Features to decode: (name, "int64" | "float32" | "string", shape, flat default or None,
    native-order numpy dtype to decode_raw a string feature into, or None)."""

    def __new__(
        cls,
        features: Sequence[tuple[str, str, Sequence[int], Sequence[Any] | None, Any | None]],
    ) -> ExampleSpec: ...
    @property
    def names(self) -> list[str]: ...

@final
class AlignedColumn:
    """The owner (numpy `base`) of a decoded numeric column's 64-byte aligned buffer."""

def decode_examples(records: Any, spec: ExampleSpec) -> dict[str, np.ndarray[Any, Any]]: ...
def encode_example(features: Sequence[tuple[bytes, str, Any]]) -> bytes: ...

@final
class DenseReader(_ReaderBase):
    """Records of a FIFO or file decoded into dense blocks on the reader thread."""

    def __new__(
        cls,
        path: _Path,
        record_format: str,
        spec: ExampleSpec,
        *,
        batch_size: int,
        batches_per_block: int,
        max_corrupted_records_to_skip: int,
        multipart: str,
        open_timeout: float | None,
        name: str | None,
        buffer_size: int,
        prefetch: int,
    ) -> DenseReader: ...
    def next_block(self) -> dict[str, np.ndarray[Any, Any]] | None: ...
    @property
    def spec(self) -> ExampleSpec: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def batches_per_block(self) -> int: ...

# --- reader: RecordBatch, RecordReader, RecordWriter ---

@final
class RecordBatch:
    """Records in one contiguous payload buffer (buffer protocol) plus `offsets`."""

    def __len__(self) -> int: ...
    def __getitem__(self, key: int, /) -> bytes: ...
    def __iter__(self) -> Iterator[bytes]: ...
    @property
    def offsets(self) -> npt.NDArray[np.int64]: ...
    @property
    def nbytes(self) -> int: ...
    def to_bytes(self) -> bytes: ...
    def to_array(self) -> npt.NDArray[np.object_]: ...
    def to_list(self) -> list[bytes]: ...

@final
class RecordReader(_ReaderBase):
    def __new__(
        cls,
        path: _Path,
        record_format: str,
        *,
        batch_size: int,
        max_corrupted_records_to_skip: int,
        multipart: str,
        open_timeout: float | None,
        name: str | None,
        buffer_size: int,
        prefetch: int,
        max_batch_bytes: int,
    ) -> RecordReader: ...
    def next_batch(self) -> RecordBatch | None: ...
    @property
    def path(self) -> str: ...
    @property
    def name(self) -> str | None: ...

@final
class RecordWriter:
    def __new__(cls, path: _Path, record_format: str = "RecordIO") -> RecordWriter: ...
    def write(self, record: bytes | bytearray | memoryview) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def path(self) -> str: ...
