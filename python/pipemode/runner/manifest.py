r"""Augmented manifests (`S3DataType: AugmentedManifestFile`): each line's attributes, streamed.

An augmented manifest is JSON Lines. For each line, in manifest order (shuffled per epoch with
ShuffleConfig), the attributes named by `AttributeNames` are streamed in that order:

- an attribute whose name ends in `-ref` is the content of the object its value names: an
  `s3://` URI, or (in a local manifest only) a path, relative to the manifest's folder;
- any other attribute is its value as text. SageMaker's guide shows a number streamed as its
  JSON text (`"is-a-cat": 1` streams `1`) and leaves the rest open; pipemode's choices:
  a string is its UTF-8 text without quotes (`"class": "0"` streams `0`); a number its text as
  written in the manifest (`1.50` stays `1.50`); `true`, `false` and `null` those words; an
  object or array compact JSON (no spaces, keys in the manifest's order, non-ASCII characters as
  UTF-8, numbers as written). A string attribute streams its characters as they are, control
  characters included; inside an object or array, strings and keys are escaped again as JSON
  needs, as Python's `json` writes them: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f` and `\u00XX` for
  the other characters below U+0020, everything else (DEL, U+2028, non-ASCII) as UTF-8, so an
  escape may not be spelled as in the manifest (`\u0009` becomes `\t`, `\/` becomes `/`).
- a key given twice, in a line or in an object, counts once with its last value (an object's
  text keeps the key at its first place: `{"k": 1, "j": 2, "k": 3}` streams `{"k":3,"j":2}`).
- NaN, Infinity and -Infinity, which Python's `json` accepts, are not JSON: a line holding one,
  anywhere, fails as a line that is not JSON.

With `RecordWrapperType: RecordIO` each attribute is one RecordIO record; without, the values
follow one another with nothing between them, as on SageMaker. A record's length has 29 bits,
so a wrapped object holds at most `_MAX_RECORD` (2**29 - 1 bytes, 512 MiB less one byte): a
larger one fails its line, before any of its bytes are written. Unwrapped objects have no limit.

Memory stays bounded whatever the manifest's length and the objects' sizes: the manifest is
indexed (three integers a line) from a local copy (an S3 manifest is copied to an anonymous
temporary file, in chunks, at the start of each epoch), each line is parsed when it is served,
and an object is streamed in chunks while the script reads, with at most `PREFETCH` objects'
first `HEAD_BYTES` fetched ahead (S3 objects on a thread pool, to hide GET latency).

A RecordIO record is written as one part (cflag 0) whose length is the object's size, so its
header can go out before the object's bytes have all arrived. Readers that follow the lengths
(dmlc's RecordIOReader, pipemode's) read it whole even when the magic word occurs in it (at an
aligned offset: about once in 170,000 objects of 100 KB); a reader that finds records by scanning
for the magic word (dmlc's chunk splitter) would not, which the dmlc writer's multipart split
avoids, at the price of holding a whole part before writing its header.

A line that is not a JSON object, lacks a named attribute, or refers to an object that cannot
be read raises `ManifestError`, naming the manifest, the line number and the attribute: the
feeder fails the job with it, as any other feed error.
"""

from __future__ import annotations

import array
import collections
import concurrent.futures
import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

from pipemode.errors import JobConfigError, PipeModeError
from pipemode.runner.channels import Channel
from pipemode.runner.sources import (
    DataObject,
    LocalObject,
    S3Object,
    read_chunks,
    s3_client,
)

__all__ = [
    "HEAD_BYTES",
    "PREFETCH",
    "ManifestError",
    "attribute_text",
    "line_order",
    "manifest_object",
    "stream_manifest_epoch",
]

RECORDIO_MAGIC = 0xCED7230A
# RecordIO's 29-bit length field: an object this big or bigger cannot be one single-part record.
_MAX_RECORD = (1 << 29) - 1
# Objects fetched ahead of the one being written (GET latency dominates small images on S3),
# and how much of each is read ahead: bounds the feeder's memory at PREFETCH * HEAD_BYTES.
PREFETCH = 8
HEAD_BYTES = 1 << 20
COALESCE_BYTES = 64 << 10


class ManifestError(PipeModeError, ValueError):
    """An augmented manifest line that cannot be served: names the manifest, line, attribute."""


class _Number(str):
    """A JSON number kept as the text the manifest spells it with."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every line (json.loads with hooks would build one per call). Numbers keep
# their text; NaN and Infinity, which Python's json accepts, are refused as JSON refuses them.
_DECODER = json.JSONDecoder(parse_int=_Number, parse_float=_Number, parse_constant=_refuse_constant)


def manifest_object(source: str) -> DataObject:
    """The manifest as an object to read each epoch; checks at job start that it is there."""
    if source.startswith("s3://"):
        bucket, _, key = source[len("s3://") :].partition("/")
        if not bucket or not key:
            raise JobConfigError(f"augmented manifest {source!r} names no bucket and key")
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
        except JobConfigError:
            raise
        except Exception as error:
            raise JobConfigError(f"cannot read augmented manifest {source}: {error}") from error
        return S3Object(bucket, key, key.rsplit("/", 1)[-1])
    path = Path(source).expanduser()
    if not path.is_file():
        raise JobConfigError(f"augmented manifest {source!r} is not a file")
    return LocalObject(path, path.name)


def line_order(
    count: int, channel: Channel, epoch: int, host_index: int, host_count: int
) -> np.ndarray:
    """The indices of the lines one host serves in one epoch, in order.

    The same rule as `sources.epoch_objects` applies to objects: shuffled from (seed, epoch),
    the same permutation on every host, then ShardedByS3Key deals the lines out in turn
    (host i of n gets positions i, i + n, i + 2n, ... of that order), so the hosts' shards are
    disjoint, cover every line, and differ in size by one line at most.
    """
    order = np.arange(count, dtype=np.int64)
    if channel.shuffle_seed is not None:
        rng = np.random.default_rng([channel.shuffle_seed % (1 << 64), epoch])
        order = rng.permutation(count)
    if channel.distribution == "ShardedByS3Key" and host_count > 1:
        order = order[host_index::host_count]
    return order


def attribute_text(value: Any) -> bytes:
    """What a non-`-ref` attribute streams (see the module's docstring for the choices)."""
    if isinstance(value, _Number):
        return str.encode(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return _json_text(value).encode("utf-8")


def _json_text(value: Any) -> str:
    if isinstance(value, _Number):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is True or value is False or value is None:
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(_json_text(item) for item in value) + "]"
    assert isinstance(value, dict), type(value)
    items = (f"{json.dumps(key, ensure_ascii=False)}:{_json_text(v)}" for key, v in value.items())
    return "{" + ",".join(items) + "}"


@dataclass(frozen=True)
class _Ref:
    """An object a `-ref` attribute names, and where in the manifest it was named."""

    obj: DataObject
    where: str


_Value = Union[bytes, _Ref]


@dataclass
class _Manifest:
    """A local, seekable copy of the manifest and where its non-blank lines start and end."""

    uri: str
    file: BinaryIO
    # Relative `-ref` paths of a local manifest are relative to its folder; None for S3.
    folder: Path | None
    starts: np.ndarray
    lengths: np.ndarray
    numbers: np.ndarray  # 1-based line numbers, for messages

    def line(self, index: int) -> tuple[int, bytes]:
        start, length = int(self.starts[index]), int(self.lengths[index])
        return int(self.numbers[index]), os.pread(self.file.fileno(), length, start)


@contextlib.contextmanager
def _opened(manifest: DataObject) -> Iterator[_Manifest]:
    with contextlib.ExitStack() as stack:
        if isinstance(manifest, LocalObject):
            file: BinaryIO = stack.enter_context(open(manifest.path, "rb"))
            folder: Path | None = manifest.path.parent
        else:
            file = stack.enter_context(tempfile.TemporaryFile())
            with manifest.open() as body:
                for chunk in read_chunks(body):
                    file.write(chunk)
            file.flush()
            folder = None
        file.seek(0)
        starts, lengths, numbers = _index_lines(file)
        yield _Manifest(manifest.uri, file, folder, starts, lengths, numbers)


def _index_lines(file: BinaryIO) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each non-blank line starts, its length and its number; 24 bytes a line."""
    starts, lengths, numbers = (array.array("q") for _ in range(3))
    offset = 0
    for number, line in enumerate(file, start=1):
        if line.strip():
            starts.append(offset)
            lengths.append(len(line))
            numbers.append(number)
        offset += len(line)
    return _as_numpy(starts), _as_numpy(lengths), _as_numpy(numbers)


def _as_numpy(column: array.array[int]) -> np.ndarray:
    return np.frombuffer(column, dtype=np.int64)  # shares the array's memory


def _parse_line(manifest: _Manifest, number: int, raw: bytes, names: Sequence[str]) -> dict:
    where = f"augmented manifest {manifest.uri}, line {number}"
    try:
        line = _DECODER.decode(raw.decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise ManifestError(
            f"{where} is not JSON ({error}), so it has none of the attributes {list(names)}"
        ) from None
    if not isinstance(line, dict):
        raise ManifestError(
            f"{where} is a JSON {type(line).__name__}, not an object with the attributes "
            f"{list(names)}"
        )
    return line


def _line_values(manifest: _Manifest, index: int, names: Sequence[str]) -> list[_Value]:
    number, raw = manifest.line(index)
    line = _parse_line(manifest, number, raw, names)
    values: list[_Value] = []
    for name in names:
        where = f"augmented manifest {manifest.uri}, line {number}, attribute {name!r}"
        if name not in line:
            raise ManifestError(f"{where}: the line has no such attribute")
        value = line[name]
        if name.endswith("-ref"):
            values.append(_Ref(_referenced(manifest, value, where), where))
        else:
            try:
                values.append(attribute_text(value))
            except UnicodeEncodeError as error:
                raise ManifestError(f"{where}: the value is not valid Unicode ({error})") from None
    return values


def _referenced(manifest: _Manifest, value: Any, where: str) -> DataObject:
    if not isinstance(value, str) or not value or isinstance(value, _Number):
        raise ManifestError(f"{where}: a -ref attribute holds an S3 URI, not {value!r}")
    if value.startswith("s3://"):
        bucket, _, key = value[len("s3://") :].partition("/")
        if not bucket or not key:
            raise ManifestError(f"{where}: {value!r} names no bucket and key")
        return S3Object(bucket, key, key)
    if manifest.folder is None:
        raise ManifestError(
            f"{where}: {value!r} is not an s3:// URI (local paths work in local manifests only)"
        )
    path = Path(value).expanduser()
    return LocalObject(path if path.is_absolute() else manifest.folder / path, value)


@dataclass
class _Fetched:
    """An object's first bytes, and its stream still open if there is more to come."""

    head: list[bytes]
    rest: BinaryIO | None

    def close(self) -> None:
        if self.rest is not None:
            self.rest.close()


def _fetch_head(ref: _Ref) -> _Fetched:
    try:
        stream = ref.obj.open()
    except Exception as error:
        raise _cannot_read(ref, error) from None
    head: list[bytes] = []
    size = 0
    try:
        for chunk in read_chunks(stream, HEAD_BYTES):
            head.append(chunk)
            size += len(chunk)
            if size >= HEAD_BYTES:
                return _Fetched(head, stream)
    except Exception as error:
        stream.close()
        raise _cannot_read(ref, error) from None
    except BaseException:
        stream.close()
        raise
    stream.close()
    return _Fetched(head, None)


def _cannot_read(ref: _Ref, error: Exception) -> ManifestError:
    """The line's error for an object that failed to open or read, naming the object once."""
    if isinstance(error, OSError) and error.strerror and error.filename:
        reason = f"cannot read {ref.obj.uri}: {error.strerror}"
    elif ref.obj.uri in str(error):  # the source's own message (S3) names it already
        reason = str(error)
    else:
        reason = f"cannot read {ref.obj.uri}: {type(error).__name__}: {error}"
    return ManifestError(f"{ref.where}: {reason}")


def _object_size(ref: _Ref) -> int:
    """The size of an object larger than its head: from the open file, or S3's HEAD."""
    obj = ref.obj
    try:
        if isinstance(obj, LocalObject):
            return os.stat(obj.path).st_size
        response = s3_client().head_object(Bucket=obj.bucket, Key=obj.key)
        return int(response["ContentLength"])
    except Exception as error:
        raise ManifestError(f"{ref.where}: cannot read the size of {obj.uri}: {error}") from None


def _record_header(size: int, where: str) -> bytes:
    if size > _MAX_RECORD:
        raise ManifestError(
            f"{where}: {size} bytes do not fit one RecordIO record (at most {_MAX_RECORD})"
        )
    return struct.pack("<II", RECORDIO_MAGIC, size)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % 4)


def _object_bytes(ref: _Ref, fetched: _Fetched, wrap: bool) -> Iterator[bytes]:
    """The object's bytes, framed as one RecordIO record if `wrap`, as they arrive."""
    if fetched.rest is None:
        payload = b"".join(fetched.head)
        if wrap:
            yield _record_header(len(payload), ref.where) + payload + _padding(len(payload))
        else:
            yield payload
        return
    size = _object_size(ref) if wrap else None
    if size is not None:
        yield _record_header(size, ref.where)
    sent = 0
    try:
        for chunk in fetched.head:
            sent += len(chunk)
            yield chunk
        for chunk in read_chunks(fetched.rest):
            sent += len(chunk)
            yield chunk
    except Exception as error:
        raise _cannot_read(ref, error) from None
    if size is not None:
        if sent != size:
            raise ManifestError(
                f"{ref.where}: {ref.obj.uri} changed while it was read "
                f"({sent} bytes, {size} announced)"
            )
        yield _padding(size)


def _text_bytes(value: bytes, wrap: bool) -> bytes:
    if not wrap:
        return value
    return struct.pack("<II", RECORDIO_MAGIC, len(value)) + value + _padding(len(value))


def stream_manifest_epoch(
    manifest: DataObject,
    channel: Channel,
    epoch: int,
    host_index: int = 0,
    host_count: int = 1,
) -> Generator[bytes, None, None]:
    """The bytes of one epoch of an augmented-manifest channel, for one host, in chunks.

    Close the generator to end the epoch early: the objects fetched ahead are closed then.
    """
    return _coalesced(_epoch_chunks(manifest, channel, epoch, host_index, host_count))


def _coalesced(chunks: Iterator[bytes]) -> Generator[bytes, None, None]:
    """Joins small chunks (attribute texts, small records) into writes of `COALESCE_BYTES`: one
    system call per attribute would cost more than the attribute. What was gathered before an
    error still goes out, so the script gets every line before a bad one."""
    gathered = bytearray()
    try:
        for chunk in chunks:
            if len(chunk) >= COALESCE_BYTES:
                if gathered:
                    yield bytes(gathered)
                    gathered.clear()
                yield chunk
                continue
            gathered += chunk
            if len(gathered) >= COALESCE_BYTES:
                yield bytes(gathered)
                gathered.clear()
    except Exception:
        if gathered:
            yield bytes(gathered)
        raise
    if gathered:
        yield bytes(gathered)


def _epoch_chunks(
    manifest: DataObject, channel: Channel, epoch: int, host_index: int, host_count: int
) -> Iterator[bytes]:
    names = channel.attribute_names or ()
    wrap = channel.record_wrapping == "RecordIO"
    with _opened(manifest) as lines:
        order = line_order(len(lines.starts), channel, epoch, host_index, host_count)
        values = (value for index in order for value in _line_values(lines, int(index), names))
        with concurrent.futures.ThreadPoolExecutor(
            PREFETCH, thread_name_prefix="pipemode-manifest"
        ) as pool:
            pending: collections.deque[tuple[_Value, Any]] = collections.deque()
            try:
                try:
                    for value in values:
                        fetch = _start_fetch(pool, value) if isinstance(value, _Ref) else None
                        pending.append((value, fetch))
                        while len(pending) > PREFETCH or (pending and pending[0][1] is None):
                            yield from _drain_one(pending, wrap)
                except ManifestError:
                    # A bad line fails the epoch where it stands: the lines before it go out.
                    while pending:
                        yield from _drain_one(pending, wrap)
                    raise
                while pending:
                    yield from _drain_one(pending, wrap)
            finally:
                _discard(pending)


def _start_fetch(pool: concurrent.futures.Executor, ref: _Ref) -> concurrent.futures.Future:
    """Fetches an S3 object's head on the pool; a local file's at once, in this thread (a
    thread hop costs more than the read), its outcome kept for its turn all the same."""
    if isinstance(ref.obj, S3Object):
        return pool.submit(_fetch_head, ref)
    done: concurrent.futures.Future[_Fetched] = concurrent.futures.Future()
    try:
        done.set_result(_fetch_head(ref))
    except ManifestError as error:
        done.set_exception(error)
    return done


def _drain_one(pending: collections.deque[tuple[_Value, Any]], wrap: bool) -> Iterator[bytes]:
    value, future = pending.popleft()
    if future is None:
        assert isinstance(value, bytes)
        yield _text_bytes(value, wrap)
        return
    assert isinstance(value, _Ref)
    fetched: _Fetched = future.result()
    try:
        yield from _object_bytes(value, fetched, wrap)
    finally:
        fetched.close()


def _discard(pending: collections.deque[tuple[_Value, Any]]) -> None:
    """Closes the objects fetched ahead of an epoch that ended early."""
    for _, future in pending:
        if future is None or future.cancel():
            continue
        with contextlib.suppress(Exception):
            future.result().close()
