"""pipemode: SageMaker Pipe Mode on any TensorFlow from 2.13, without TensorFlow, on one machine.

The reader, writer, dense Example decoder and runner import without TensorFlow;
`pipemode.PipeModeDataset` imports it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipemode._native import __version__
from pipemode.channel import PipeModeChannel
from pipemode.decode import DenseReader, FixedLenFeature, decode_examples, encode_example
from pipemode.errors import (
    CorruptRecordError,
    PipeModeDatasetException,
    PipeModeError,
    PipeTimeoutError,
    RecordDecodeError,
)
from pipemode.reader import RecordBatch, RecordReader, RecordWriter

if TYPE_CHECKING:
    from pipemode.tensorflow import PipeModeDataset

__all__ = [
    "CorruptRecordError",
    "DenseReader",
    "FixedLenFeature",
    "PipeModeChannel",
    "PipeModeDataset",
    "PipeModeDatasetException",
    "PipeModeError",
    "PipeTimeoutError",
    "RecordBatch",
    "RecordDecodeError",
    "RecordReader",
    "RecordWriter",
    "__version__",
    "decode_examples",
    "encode_example",
]


def __getattr__(name: str) -> Any:
    # TensorFlow takes seconds to import and is an optional extra: load it only when asked for.
    if name == "PipeModeDataset":
        from pipemode.tensorflow import PipeModeDataset

        return PipeModeDataset
    raise AttributeError(f"module 'pipemode' has no attribute {name!r}")
