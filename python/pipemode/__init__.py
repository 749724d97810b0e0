"""pipemode: SageMaker Pipe Mode on any TensorFlow from 2.13, without TensorFlow, on one machine.

The reader, writer, dense Example decoder and runner import without TensorFlow;
`pipemode.PipeModeDataset` imports it on first use.
"""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # for type checkers; at run time it comes from __getattr__, importing TF
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


def __getattr__(name: str) -> object:
    # TensorFlow takes seconds to import and is an optional extra: load it only when asked for.
    if name == "PipeModeDataset":
        try:
            from pipemode.tensorflow import PipeModeDataset
        except ModuleNotFoundError as missing:
            if missing.name != "tensorflow":
                raise
            raise ModuleNotFoundError(
                'pipemode.PipeModeDataset needs TensorFlow: pip install "pipemode[tensorflow]" '
                "(or any tensorflow>=2.13). The reader, decoder and runner work without it.",
                name="tensorflow",
            ) from missing
        return PipeModeDataset
    raise AttributeError(f"module 'pipemode' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names only, not the typing helpers imported above.
    return sorted(__all__)
