"""tf.train.Example records decoded to dense numpy columns in Rust, without TensorFlow.

`features` is the dict you would pass to `tf.io.parse_example`: `tf.io.FixedLenFeature`
objects (or `pipemode.FixedLenFeature`, the same thing without TF) of int64, float32 or string
values, with their shapes and defaults. `decode_raw={name: dtype}` also applies
`tf.io.decode_raw` (little-endian) to a string feature. Each batch decodes to
`{name: ndarray[rows, *shape]}`, equal to what `tf.io.parse_example` (+ `tf.io.decode_raw`)
returns: int64 as int64, float32 as float32, `decode_raw` features as their dtype with one more
dimension (the items of each string), other strings as object arrays of `bytes`. Numeric
arrays are 64-byte aligned, the alignment TensorFlow needs to adopt a buffer without a copy.

Only `FixedLenFeature` is supported. `VarLenFeature`, `SparseFeature`, `RaggedFeature` and
`FixedLenSequenceFeature` give ragged or sparse results that have no dense column; read the raw
records (`pipemode.RecordReader`) and parse those in TF instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple, Union

import numpy as np

from pipemode import _native
from pipemode.errors import PipeModeDatasetException
from pipemode.reader_base import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_PREFETCH,
    PathLike,
    StreamReader,
)

__all__ = [
    "DenseReader",
    "FeatureColumn",
    "FixedLenFeature",
    "decode_examples",
    "encode_example",
    "example_spec",
    "feature_columns",
]

# Defined in the Rust core (see reader_base.py): rows per dense batch unless asked otherwise
# (the tutorial's batch(64)), and batches per decoded block.
DEFAULT_DENSE_BATCH_SIZE: int = _native.DEFAULT_DENSE_BATCH_SIZE
DEFAULT_BATCHES_PER_BLOCK: int = _native.DEFAULT_BATCHES_PER_BLOCK

# The decoder's kinds, "string" for byte strings as in TF, by the spellings users give them.
_KINDS = {"int64": "int64", "float32": "float32", "string": "string", "bytes": "string"}
_UNSUPPORTED = ("VarLenFeature", "SparseFeature", "RaggedFeature", "FixedLenSequenceFeature")
_SUPPORTED = (
    "pipemode decodes FixedLenFeature of int64, float32 or string values (strings optionally "
    "through decode_raw) into dense columns"
)


class FixedLenFeature(NamedTuple):
    """A feature with `prod(shape)` values in every record, like `tf.io.FixedLenFeature`.

    `dtype` is "int64", "float32" or "string" (numpy dtypes and `tf.int64`, `tf.float32`,
    `tf.string` work too). A record without the feature gets `default_value` (exactly
    `prod(shape)` values, reshaped as TF does), or is an error when there is none.
    """

    shape: Any
    dtype: Any
    default_value: Any = None


def _kind(name: str, dtype: Any) -> str:
    """ "int64", "float32" or "string" from a dtype given as a string, numpy or TF dtype."""
    if isinstance(dtype, str):
        label = dtype
    elif getattr(dtype, "name", None) in _KINDS and not isinstance(dtype, type):
        label = dtype.name  # tf.DType or np.dtype
    else:
        try:
            np_dtype = np.dtype(dtype)
        except TypeError:
            label = repr(dtype)
        else:
            label = "string" if np_dtype.kind in "SO" else np_dtype.name
    if label not in _KINDS:
        raise PipeModeDatasetException(
            f"feature {name!r}: dtype {dtype!r} is not supported: {_SUPPORTED}"
        )
    return _KINDS[label]


def _shape(name: str, shape: Any) -> tuple[int, ...]:
    dims = getattr(shape, "as_list", lambda: shape)()  # tf.TensorShape
    if isinstance(dims, int):
        dims = [dims]
    if dims is None or any(d is None or int(d) < 0 for d in dims):
        raise PipeModeDatasetException(
            f"feature {name!r}: shape {shape!r} must be fully known and non-negative"
        )
    return tuple(int(d) for d in dims)


def _default(name: str, kind: str, shape: tuple[int, ...], default: Any) -> list[Any] | None:
    """The default flattened to a list, refusing what TF refuses (floats for an int64)."""
    # TF takes an empty default of an empty shape for no default: the feature is then required.
    if default is None or (np.size(default) == 0 and 0 in shape):
        return None
    if kind == "string":
        values = np.asarray(default, dtype=object).ravel().tolist()
        if not all(isinstance(v, (bytes, str)) for v in values):
            raise PipeModeDatasetException(f"feature {name!r}: default_value must be bytes or str")
        return [v.encode() if isinstance(v, str) else v for v in values]
    array = np.asarray(default)
    allowed = "iu" if kind == "int64" else "iuf"
    if array.dtype.kind not in allowed:
        raise PipeModeDatasetException(
            f"feature {name!r}: default_value {default!r} does not convert to {kind}"
        )
    return array.astype(kind).ravel().tolist()


def _raw_dtype(dtype: Any) -> np.dtype[Any]:
    """The column's numpy dtype, in native byte order: `tf.io.decode_raw` reads the strings as
    little-endian (its default) and hands out native numbers whatever order was asked for.
    Which dtypes decode is checked once, by the native `ExampleSpec`."""
    np_dtype = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))  # tf.DType -> numpy
    return np_dtype.newbyteorder("=")


class FeatureColumn(NamedTuple):
    """One feature as the decoder takes it: checked, with its dtype, shape and default
    normalised from whatever `tf.io.parse_example` or numpy spelling the user gave."""

    name: str
    kind: str  # "int64", "float32" or "string"
    shape: tuple[int, ...]
    default: list[Any] | None  # flattened, or None when the feature is required
    raw_dtype: np.dtype[Any] | None  # decode_raw's item type (native order), if any


def feature_columns(
    features: Mapping[str, Any], decode_raw: Mapping[str, Any] | None = None
) -> list[FeatureColumn]:
    """Checks `features` (a `tf.io.parse_example` dict) and `decode_raw`, normalised once for
    the decoder and for anything that describes its output (such as a TF signature). Which
    `decode_raw` dtypes decode is checked by the native `ExampleSpec` built from them."""
    if not isinstance(features, Mapping) or not features:
        raise PipeModeDatasetException("features must be a non-empty dict of name -> feature")
    decode_raw = dict(decode_raw or {})
    unknown = set(decode_raw) - set(features)
    if unknown:
        raise PipeModeDatasetException(f"decode_raw names features not in features: {unknown}")
    return [_column(name, feature, decode_raw) for name, feature in features.items()]


def _column(name: str, feature: Any, decode_raw: dict[str, Any]) -> FeatureColumn:
    kind_name = type(feature).__name__
    if kind_name in _UNSUPPORTED or not all(
        hasattr(feature, a) for a in ("shape", "dtype", "default_value")
    ):
        raise PipeModeDatasetException(
            f"feature {name!r}: {kind_name} is not supported: {_SUPPORTED}; parse it in "
            "TensorFlow from the raw records instead"
        )
    kind = _kind(name, feature.dtype)
    raw_dtype = None
    if name in decode_raw:
        if kind != "string":
            raise PipeModeDatasetException(
                f"decode_raw of {name!r}: only string features can be decoded, not {kind}"
            )
        raw_dtype = _raw_dtype(decode_raw[name])
    shape = _shape(name, feature.shape)
    return FeatureColumn(
        name, kind, shape, _default(name, kind, shape, feature.default_value), raw_dtype
    )


def example_spec(
    features: Mapping[str, Any] | _native.ExampleSpec,
    decode_raw: Mapping[str, Any] | None = None,
) -> _native.ExampleSpec:
    """Checks `features` (a `tf.io.parse_example` dict) and `decode_raw` once, for decoding."""
    if isinstance(features, _native.ExampleSpec):
        if decode_raw:
            raise PipeModeDatasetException("decode_raw is already part of the ExampleSpec")
        return features
    return _native.ExampleSpec(feature_columns(features, decode_raw))


def decode_examples(
    records: Iterable[bytes] | Any,
    features: Mapping[str, Any] | _native.ExampleSpec,
    decode_raw: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Decodes a batch of serialized Examples, as `tf.io.parse_example` (+ `decode_raw`) would.

    `records` is a `pipemode.RecordBatch` or a sequence of `bytes`. Raises
    `RecordDecodeError` naming the record and feature at the first record that does not decode.
    """
    spec = example_spec(features, decode_raw)
    if not isinstance(records, (_native.RecordBatch, list, tuple)):
        records = list(records)
    return _native.decode_examples(records, spec)


FeatureValue = Union[bytes, str, int, float, Iterable[Any], np.ndarray]


def encode_example(features: Mapping[str, FeatureValue]) -> bytes:
    """Serializes a tf.train.Example without TensorFlow: the decoder's inverse.

    Each value is `bytes` (or `str`, UTF-8) or a list of them (a bytes_list), ints (an
    int64_list) or floats (a float_list, stored as float32), or a numpy array of any of these.
    An empty list has no type: pass `np.array([], dtype=...)`.
    """
    return _native.encode_example([_entry(name, value) for name, value in features.items()])


def _entry(name: str, value: FeatureValue) -> tuple[bytes, str, Any]:
    if isinstance(value, (bytes, str)):
        value = [value]
    if isinstance(value, np.ndarray):
        array = value
    else:
        items = list(_iterable(value))
        if any(isinstance(v, (bytes, str)) for v in items):
            # Object dtype keeps bytes intact (a numpy "S" array drops trailing NUL bytes).
            array = np.empty(len(items), object)
            array[:] = items
        elif not items:
            raise TypeError(
                f"feature {name!r}: an empty list has no type; pass np.array([], dtype)"
            )
        else:
            array = np.asarray(items)
    if array.dtype.kind in "SUO":
        strings = array.ravel().tolist()
        if not all(isinstance(v, (bytes, str)) for v in strings):
            raise TypeError(f"feature {name!r}: a list mixing bytes and numbers")
        return name.encode(), "string", [v.encode() if isinstance(v, str) else v for v in strings]
    if array.dtype.kind in "iub":
        return name.encode(), "int64", array.astype("<i8").ravel().tobytes()
    if array.dtype.kind == "f":
        return name.encode(), "float32", array.astype("<f4").ravel().tobytes()
    raise TypeError(f"feature {name!r}: cannot store {array.dtype} values in an Example")


def _iterable(value: Any) -> Iterable[Any]:
    return value if isinstance(value, Iterable) else [value]


Columns = dict[str, np.ndarray]


class DenseReader(StreamReader[_native.DenseReader]):
    """Reads a FIFO or file of tf.train.Example records as dense numpy batches.

    ``for batch in reader`` yields ``{name: ndarray[batch_size, *shape]}`` per batch (the last
    one may be smaller), equal to `tf.io.parse_example` (+ `decode_raw`) on those records.
    Records are framed and decoded on a native thread, ``batch_size * batches_per_block``
    at a time, or fewer once a block holds 2 MiB (blocks that stay in cache decode faster); a
    batch is a view into its block, so it costs no copy. ``reader.blocks()`` yields the whole
    blocks instead. Nothing is opened until the first read. A record that does
    not decode raises `pipemode.RecordDecodeError` naming the path, record index, byte offset
    and feature; bad framing raises `pipemode.CorruptRecordError`. With ``decode_raw``, a
    feature's strings must all have one size within a batch, as TF requires; where the size
    changes between batches, a block ends early so that each block has one size.

    For PyTorch or JAX: ``torch.from_numpy(batch["data"])`` shares the buffer as it is.
    """

    def __init__(
        self,
        path: PathLike,
        record_format: str = "RecordIO",
        *,
        features: Mapping[str, Any] | _native.ExampleSpec,
        decode_raw: Mapping[str, Any] | None = None,
        batch_size: int = DEFAULT_DENSE_BATCH_SIZE,
        batches_per_block: int = DEFAULT_BATCHES_PER_BLOCK,
        max_corrupted_records_to_skip: int = 0,
        multipart: str = "dmlc",
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        name: str | None = None,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        prefetch: int = DEFAULT_PREFETCH,
    ) -> None:
        super().__init__(path, name, open_timeout)
        # Built now so that a bad spec or option fails here; the reader opens nothing yet.
        self._native = _native.DenseReader(
            self._path,
            record_format,
            example_spec(features, decode_raw),
            batch_size=batch_size,
            batches_per_block=batches_per_block,
            max_corrupted_records_to_skip=max_corrupted_records_to_skip,
            multipart=multipart,
            open_timeout=open_timeout,
            name=name,
            buffer_size=buffer_size,
            prefetch=prefetch,
        )

    @property
    def batch_size(self) -> int:
        return self._native.batch_size

    @property
    def spec(self) -> _native.ExampleSpec:
        return self._native.spec

    def blocks(self) -> Iterator[Columns]:
        """Yields blocks of whole batches, up to ``batch_size * batches_per_block`` rows and
        ending after the batch that brings a block to 2 MiB (the last may be smaller)."""
        return self._drain(self._native.next_block)

    def __iter__(self) -> Iterator[Columns]:
        size = self.batch_size
        for block in self.blocks():
            rows = len(next(iter(block.values())))
            for start in range(0, rows, size):
                yield {name: column[start : start + size] for name, column in block.items()}
