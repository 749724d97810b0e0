"""PipeModeDataset: a drop-in for `sagemaker_tensorflow.PipeModeDataset` on TensorFlow 2.13+.

Replace `from sagemaker_tensorflow import PipeModeDataset` with
`from pipemode import PipeModeDataset` and the rest of a training script keeps working.

How records get into TF fast: the Rust reader frames records on its own thread into batches of
up to a thousand, and each batch crosses into TF in one `from_generator` step, as one string
tensor of a record per element, which TF unbatches. One Python call per record would cost
~150 µs each, more than reading the record.

With `features=`, tf.train.Example records are decoded in Rust into dense columns, and blocks of
several batches cross at once and are split into `batch_size` batches inside TF.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import gc
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, TypeVar

import numpy as np
import tensorflow as tf

from pipemode._native import ExampleSpec
from pipemode.channel import PipeModeChannel
from pipemode.decode import DEFAULT_DENSE_BATCH_SIZE, FeatureColumn, feature_columns
from pipemode.errors import PipeModeDatasetException
from pipemode.reader import RecordBatch
from pipemode.reader_base import (
    DEFAULT_OPEN_TIMEOUT,
    InterpreterExiting,
    PathLike,
    stop_readers_at_exit,
)

__all__ = ["PipeModeDataset"]

# A batch handed from Rust to TF on the raw path holds up to this many records or this many
# payload bytes: large enough that the one Python call per batch is noise, small enough that
# the batch stays in cache while it is copied into Python's and then TF's strings: on 8 KB
# records, 2 MiB batches ran 15-30% faster than 8 MiB ones (median of 8 runs each), and the
# per-record pipeline took more CPU per record with 512 KiB ones (one run of 6 rounds).
RAW_BATCH_RECORDS = 1024
RAW_BATCH_BYTES = 2 << 20
# One record per element of the string tensor a batch crosses as.
_RAW_SIGNATURE = tf.TensorSpec(shape=(None,), dtype=tf.string)
# How much freed memory glibc may keep at the top of a heap rather than give back to the OS (see
# `_keep_freed_heap_for_reuse`): several raw batches' worth of Python and TF strings.
HEAP_KEPT_BYTES = 16 << 20
_M_TRIM_THRESHOLD = -1  # glibc's malloc.h


class PipeModeDataset(tf.data.Dataset):
    """The records of a SageMaker Pipe Mode channel, one epoch per iterator, as a tf.data.Dataset.

    Arguments as `sagemaker_tensorflow.PipeModeDataset`: `channel` and `record_format`
    (`'RecordIO'`, `'TFRecord'` or `'TextLine'`); `state_dir`, `pipe_dir` and `config_dir` (None:
    the SageMaker folders, under `SAGEMAKER_BASE_DIR`, `SM_INPUT_DIR` and `SM_INPUT_CONFIG_DIR`
    when set); `benchmark` prints totals when an epoch ends and `benchmark_records_interval`
    every that many records; `max_corrupted_records_to_skip` (TFRecord only) skips that many
    consecutive records whose data CRC is wrong.

    Each element is one record as a scalar `tf.string`. Each iterator (each `repeat` pass, each
    Keras epoch) reads the channel's next epoch, claimed when it first reads, so an iterator
    that is never read consumes nothing. `open_timeout` bounds, in seconds, the wait for the
    epoch's FIFO and its writer; `multipart="concat"` joins multipart RecordIO records as the
    incumbent did rather than as MXNet does (the default, "dmlc").

    The fast path, `features=`: a dict of `tf.io.FixedLenFeature` as for `tf.io.parse_example`,
    `decode_raw={name: dtype}` for string features holding raw numbers. Examples are decoded in
    Rust and each element is a batch: a dict of dense tensors `[batch_size, *shape]` (the last
    batch of an epoch may be shorter), equal to `parse_example` + `decode_raw` over `batch(n)`.

    `attribute_names=[...]`, for an augmented-manifest channel with RecordIO wrapping: each
    element is one manifest line, a dict `{name: scalar tf.string}` of its attributes in that
    order; an epoch whose records do not make whole lines fails, naming channel and epoch.
    """

    def __init__(
        self,
        channel: str,
        record_format: str = "RecordIO",
        state_dir: PathLike | None = None,
        pipe_dir: PathLike | None = None,
        config_dir: PathLike | None = None,
        benchmark: bool = False,
        benchmark_records_interval: int = 0,
        max_corrupted_records_to_skip: int = 0,
        *,
        features: Mapping[str, Any] | None = None,
        decode_raw: Mapping[str, Any] | None = None,
        batch_size: int = DEFAULT_DENSE_BATCH_SIZE,
        open_timeout: float | None = DEFAULT_OPEN_TIMEOUT,
        multipart: str = "dmlc",
        attribute_names: Sequence[str] | None = None,
    ) -> None:
        pipe_channel = PipeModeChannel(
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
        self.pipe_channel = pipe_channel
        # The incumbent's attributes, for scripts that read them.
        self.channel = channel
        self.record_format = record_format
        self.state_dir = str(pipe_channel.state_dir)
        self.pipe_dir = str(pipe_channel.pipe_dir)
        self.benchmark = benchmark
        self.benchmark_records_interval = benchmark_records_interval
        self.max_corrupted_records_to_skip = max_corrupted_records_to_skip
        self.input_data_config = pipe_channel.input_data_config
        meter = _meter_factory(benchmark, benchmark_records_interval)
        if attribute_names is not None:
            pipeline = _manifest_lines(pipe_channel, meter, features)
        elif features is None:
            if decode_raw is not None:
                raise PipeModeDatasetException(
                    "decode_raw= needs features=: it names features to decode"
                )
            pipeline = _raw_records(pipe_channel, meter)
        else:
            pipeline = _dense_batches(pipe_channel, meter, features, decode_raw, batch_size)
        # Each host's pipe holds only its own records: a strategy's auto-sharding must not drop
        # any (on a from_generator dataset it would keep 1/N of them, sharding by DATA).
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        pipeline = pipeline.with_options(options)
        # The composed pipeline does the work; this class gives it the incumbent's name and
        # constructor so `isinstance(ds, PipeModeDataset)` and every Dataset method still work.
        self._pipeline = pipeline
        super().__init__(pipeline._variant_tensor)

    def _inputs(self) -> list[tf.data.Dataset]:
        return [self._pipeline]

    @property
    def element_spec(self) -> Any:
        return self._pipeline.element_spec


_Element = TypeVar("_Element")


def _ends_at_exit(generate: Callable[[], Iterator[_Element]]) -> Callable[[], Iterator[_Element]]:
    """The generator ends quietly where pipemode refuses a read because the interpreter exits.

    tf.data's threads go on pulling while the script exits (a `repeat()` starts the next epoch,
    a strategy's prefetch asks for more). Nobody is left to read that error, yet TF would log its
    traceback on every such exit, burying the script's own last words in stderr.
    """

    def generate_until_exit() -> Iterator[_Element]:
        try:
            yield from generate()
        except InterpreterExiting:
            return

    return generate_until_exit


def _raw_records(channel: PipeModeChannel, meter: Callable[[str], Any]) -> tf.data.Dataset:
    @_ends_at_exit
    def generate() -> Iterator[np.ndarray]:
        _Exit.pipelines_started = True
        # A generator's body runs on its first next(): the epoch is claimed on the first read.
        epoch = channel.claim_next_epoch()
        reader = channel.open_reader(epoch, RAW_BATCH_RECORDS, RAW_BATCH_BYTES)
        try:
            for batch in meter(channel.describe(epoch)).watch(reader, channel.read_batches(reader)):
                yield raw_batch_tensor(batch)
            # With attribute_names: raised before a partial line could make an element (the
            # lines' batch drops remainders).
            channel.check_whole_lines(reader.records_read, epoch, reader.bytes_read)
        finally:
            reader.close()

    return records_from_batches(generate)


def _manifest_lines(
    channel: PipeModeChannel, meter: Callable[[str], Any], features: Any
) -> tf.data.Dataset:
    """One `{name: tf.string}` element per augmented-manifest line: the raw records, grouped."""
    if features is not None:
        raise PipeModeDatasetException("attribute_names= and features= do not go together")
    names = channel.attribute_names or ()
    lines = _raw_records(channel, meter).batch(len(names), drop_remainder=True)
    return lines.map(lambda values: {name: values[i] for i, name in enumerate(names)})


def raw_batch_tensor(batch: RecordBatch) -> np.ndarray:
    """What crosses into TF for a batch of raw records: one `bytes` per record, in a 1-d object
    array that TF copies into a string tensor in one call.

    Measured against runs of whole records (64 KiB `bytes`) split in TF by one
    `tf.strings.substr`: that copies each record once more, and on the tutorial's per-record
    pipeline cost 10-20% more CPU per record (benches/README.md, issue 15).
    """
    return batch.to_array()


def records_from_batches(generate: Callable[[], Iterator[np.ndarray]]) -> tf.data.Dataset:
    """One scalar string per record from a generator of `raw_batch_tensor` elements: one Python
    call per batch, not per record."""
    _keep_freed_heap_for_reuse()
    batches = tf.data.Dataset.from_generator(generate, output_signature=_RAW_SIGNATURE)
    return batches.unbatch()


@functools.cache
def _keep_freed_heap_for_reuse() -> None:
    """Raises glibc's trim threshold to `HEAP_KEPT_BYTES`, once per process.

    Each raw batch becomes Python `bytes`, then TF strings, then is freed: megabytes at a time.
    glibc gives the top of a heap back to the OS once more than its trim threshold is free
    there, and would raise that threshold itself as large blocks come and go, but TF fixes the
    mmap threshold when it builds a `from_generator` dataset, which stops that: the threshold
    stays at 128 KiB, so every batch's pages were given back and faulted in again. On the
    tutorial's per-record pipeline that was ~4 page faults per 8 KB record on TF 2.21 (0.1 with
    this), ~10-20% of its CPU (benches/README.md, issue 15). A `MALLOC_TRIM_THRESHOLD_` in the
    environment is the user's choice and stays; other C libraries have no such threshold.
    """
    if "MALLOC_TRIM_THRESHOLD_" in os.environ or not _glibc():
        return
    ctypes.CDLL(None).mallopt(_M_TRIM_THRESHOLD, HEAP_KEPT_BYTES)


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):  # a name this platform does not know
        return False


def _dense_batches(
    channel: PipeModeChannel,
    meter: Callable[[str], Any],
    features: Mapping[str, Any],
    decode_raw: Mapping[str, Any] | None,
    batch_size: int,
) -> tf.data.Dataset:
    # Checked now, so a bad spec or batch size fails at construction, before any epoch is
    # claimed.
    columns = feature_columns(features, decode_raw)
    spec = ExampleSpec(columns)
    channel.check_reader_options(batch_size, spec)

    @_ends_at_exit
    def generate() -> Iterator[dict[str, np.ndarray]]:
        _Exit.pipelines_started = True
        epoch = channel.claim_next_epoch()
        reader = channel.open_dense_reader(epoch, spec, batch_size=batch_size)
        try:
            yield from meter(channel.describe(epoch)).watch(reader, reader.blocks())
        finally:
            reader.close()

    return dense_batches_from_blocks(generate, _dense_signature(columns), batch_size)


def dense_batches_from_blocks(
    generate: Callable[[], Iterator[dict[str, np.ndarray]]],
    signature: dict[str, tf.TensorSpec],
    batch_size: int,
) -> tf.data.Dataset:
    """Batches of `batch_size` rows from a generator of blocks of several batches.

    A block crosses into TF in one step (the decoder's 64-byte aligned columns are adopted
    without a copy) and `rebatch` slices it: measured faster than reshaping blocks to
    `[k, batch_size, ...]` and unbatching, and than yielding each batch from Python.
    """
    blocks = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return blocks.rebatch(batch_size)


_TF_KINDS = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}


def _dense_signature(columns: list[FeatureColumn]) -> dict[str, tf.TensorSpec]:
    """The spec of a block: `[rows, *shape]`, one more axis for the items of decoded raw bytes.

    Built from the decoder's normalised columns, not the user's spec: TF's `as_dtype` refuses
    spellings the decoder accepts, such as "bytes" or "<f4".
    """
    signature = {}
    for column in columns:
        if column.raw_dtype is None:
            shape, dtype = column.shape, _TF_KINDS[column.kind]
        else:
            # TF names the item type without numpy's byte order ("<f4" is "float32").
            shape, dtype = (*column.shape, None), tf.as_dtype(column.raw_dtype.name)
        signature[column.name] = tf.TensorSpec(shape=[None, *shape], dtype=dtype)
    return signature


class _Meter:
    """Reports what an epoch's reader delivered and where its time went, from its counters.

    The reader thread counts the seconds it waited on the pipe (for data) and on TensorFlow
    (for room in its queue): which one dominates says whether the input or the model is slow.
    Beside pipemode's own line, the incumbent's lines are printed word for word, since SageMaker
    users turn them into training metrics with regexes (`metric_definitions`): one group per
    `benchmark_records_interval` records, and totals when the epoch ends. Records arrive in
    batches here, so a group's `read_time_ns` and `read_bytes` are its batch's per-record mean.
    """

    INCUMBENT = "PipeModeDatasetOp::Dataset::Iterator"

    def __init__(self, name: str, interval: int, report_at_end: bool) -> None:
        self.name = name
        self.interval = interval
        self.report_at_end = report_at_end
        self.read_seconds = 0.0

    def watch(self, reader: Any, batches: Iterable[Any]) -> Iterator[Any]:
        started = time.perf_counter()
        next_report = self.interval
        batches = iter(batches)
        try:
            while True:
                records_before, bytes_before = reader.records_read, reader.bytes_read
                asked = time.perf_counter()
                batch = next(batches, None)
                self.read_seconds += time.perf_counter() - asked
                if batch is None:
                    return
                # One reading of the counter: the reader thread moves it on meanwhile.
                read = reader.records_read
                if self.interval and read >= next_report:
                    records = read - records_before
                    mean_ns = int((time.perf_counter() - asked) * 1e9 / max(records, 1))
                    mean_bytes = (reader.bytes_read - bytes_before) // max(records, 1)
                    for count in range(next_report, read + 1, self.interval):
                        self.report_interval(count, mean_ns, mean_bytes)
                    self.report(reader, "in progress", started)
                    next_report = (read // self.interval + 1) * self.interval
                yield batch
        finally:
            if self.report_at_end:
                self.report(reader, "finished", started)
                self.report_totals(reader)

    def report(self, reader: Any, what: str, started: float) -> None:
        seconds = time.perf_counter() - started
        megabytes = reader.bytes_read / 1e6
        rate = megabytes / seconds if seconds > 0 else 0.0
        # Printed, as sagemaker_tensorflow did: the user asked for it with benchmark=.
        _print(
            f"PipeModeDataset {self.name} {what}: {reader.records_read} records, "
            f"{megabytes:.1f} MB in {seconds:.3f} s ({rate:.1f} MB/s); waited "
            f"{reader.pipe_wait_seconds:.3f} s on the pipe, "
            f"{reader.consumer_wait_seconds:.3f} s on TensorFlow"
        )

    def report_interval(self, records: int, read_time_ns: int, read_bytes: int) -> None:
        _print(f"{self.INCUMBENT} records: {records}")
        _print(f"{self.INCUMBENT} records read_time_ns: {read_time_ns}")
        _print(f"{self.INCUMBENT} records read_bytes: {read_bytes}")

    def report_totals(self, reader: Any) -> None:
        read_ms = int(self.read_seconds * 1000)
        gigabytes = reader.bytes_read / 1024**3
        # The incumbent divides by whole milliseconds too; an instant read reports inf.
        rate = gigabytes / (read_ms / 1000) if read_ms else float("inf")
        _print(f"{self.INCUMBENT} total read_time_ms: {read_ms}")
        _print(f"{self.INCUMBENT} total read_bytes: {reader.bytes_read}")
        _print(f"{self.INCUMBENT} total read_GB/s: {rate:g}")


def _print(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


class _NoMeter:
    def watch(self, reader: Any, batches: Iterable[Any]) -> Iterable[Any]:
        return batches


def _meter_factory(benchmark: bool, interval: int) -> Callable[[str], Any]:
    if not benchmark and interval <= 0:
        return lambda name: _NoMeter()
    return lambda name: _Meter(name, interval, report_at_end=benchmark)


class _Exit:
    """Why a process that read a PipeModeDataset keeps TF's live iterators at exit.

    tf.data keeps pulling from `from_generator` on its own threads (prefetch, parallel map)
    after the script stops consuming, for instance after an error under `repeat()`. Each pull
    is a call into Python. Once the interpreter finalizes, a thread that asks for the GIL is
    stopped for good, and the finalizer then destroys the iterator, whose destructor waits for
    that thread: the process never exits. When pulls stop cannot be known from here (a busy
    `map` comes back for more after any delay). So at exit, after every reader is closed and no
    new epoch can start, the live iterators are kept alive: never destroyed, they wait for no
    thread, and the operating system reclaims them with the process.
    """

    pipelines_started = False

    @classmethod
    def keep_iterators(cls) -> None:
        if not cls.pipelines_started:
            return
        stop_readers_at_exit()
        for obj in gc.get_objects():
            # type(obj), not isinstance: isinstance reads obj.__class__, which warns on some
            # objects (torch.distributed.reduce_op prints a FutureWarning at exit).
            if issubclass(type(obj), tf.data.Iterator):
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))


atexit.register(_Exit.keep_iterators)
