"""Where a channel's bytes come from: local files and folders, S3 prefixes and manifests.

A source resolves once, at job start, into an ordered sequence of objects (like S3 keys); an S3
prefix's listing goes on page by page in the background while the first objects are served. Each
epoch then takes that sequence, shuffled from the channel's seed and sharded for the host, and
streams the objects in order. S3 objects are read while they are served, never downloaded first,
and an object's `open()` gives a stream that never ends short silently: an S3 body cut mid-way is
resumed (fetch.py), a local file that shrinks while read raises, naming the byte reached.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Union, overload

import numpy as np

from pipemode.errors import JobConfigError
from pipemode.runner.channels import Channel
from pipemode.runner.fetch import ObjectReadError, S3Reader, S3Settings, describe_error

__all__ = [
    "LocalObject",
    "ObjectReadError",
    "S3Object",
    "epoch_objects",
    "epoch_stream",
    "gunzip",
    "read_chunks",
    "resolve",
]

CHUNK_SIZE = 1 << 20
# A gzip member can expand a thousandfold: decompress in bounded steps so memory stays bounded.
_MAX_GUNZIP_STEP = 4 << 20


@dataclass(frozen=True)
class LocalObject:
    path: Path
    key: str

    @property
    def uri(self) -> str:
        return str(self.path)

    def open(self) -> BinaryIO:
        return _LocalReader(self.path)  # type: ignore[return-value]


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    # The part of the key below the channel's prefix folder: the file's name in File mode.
    relative_key: str
    # From the listing; None for a manifest's keys. A known size lets a large object be read as
    # concurrent ranged GETs, and an object rewritten to another size is noticed.
    size: int | None = field(default=None, compare=False)
    # From the listing too: every GET of the object carries If-Match on it, so an object
    # rewritten during the job fails its read instead of being spliced from two versions.
    etag: str | None = field(default=None, compare=False)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def open(self) -> BinaryIO:
        """The object as a stream that resumes a cut body and raises ObjectReadError if it
        still cannot be read whole (on the first read, not here)."""
        reader = S3Reader(
            s3_client(own_retries=True),
            self.bucket,
            self.key,
            s3_settings(),
            expected_size=self.size,
            etag=self.etag,
        )
        return reader  # type: ignore[return-value]


DataObject = Union[LocalObject, S3Object]


def relative_name(obj: DataObject) -> str:
    """The object's path below its channel folder, for File-mode channels."""
    return obj.key if isinstance(obj, LocalObject) else obj.relative_key


class _LocalReader(io.RawIOBase):
    """A local file read from its start that raises, naming the byte reached, if it ends short
    of the size it had when opened: a file truncated under the feeder is no shorter epoch."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.uri = str(path)
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed by close())
        self.size = os.fstat(self._file.fileno()).st_size
        self.position = 0

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def readinto(self, buffer: Any) -> int:
        count = self._file.readinto(buffer) or 0
        self.position += count
        if count == 0 and len(buffer) > 0:
            check_complete(self.uri, self.position, self.size)
        return count

    def close(self) -> None:
        # IOBase's finalizer calls close() also on a reader whose open() failed in __init__.
        if hasattr(self, "_file"):
            self._file.close()
        super().close()


def check_complete(uri: str, reached: int, size: int) -> None:
    if reached < size:
        raise ObjectReadError(
            uri, reached, f"the file ended there, short of the {size} bytes it held when opened"
        )


_NEW_CLIENT = threading.Lock()


@functools.cache
def s3_client(own_retries: bool = False) -> Any:
    """One boto3 S3 client for the process (clients are thread-safe, sessions are not), and one
    whose requests botocore does not retry, for S3Reader, which retries them itself.

    boto3 is the optional extra `s3`, imported only when a channel reads from S3. Credentials come
    from boto3's usual chain; AWS_ENDPOINT_URL(_S3) points it at another S3-API server. Timeouts
    and retries come from `s3_settings()`.
    """
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise JobConfigError("s3:// sources need boto3: pip install 'pipemode[s3]'") from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    config = s3_settings().boto_config(own_retries)
    # boto3's default session is not thread-safe, and feeder threads may make the first client
    # of a kind at the same moment: each client gets a session of its own, one at a time.
    with _NEW_CLIENT:
        session = boto3.session.Session()
        return session.client("s3", endpoint_url=endpoint or None, config=config)


def s3_settings() -> S3Settings:
    """The S3 settings of this process: the defaults, or PIPEMODE_S3_* from the environment."""
    return S3Settings.from_environment()


def _split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise JobConfigError(f"{uri!r} names no bucket")
    return bucket, key


class StreamedListing(Sequence[DataObject]):
    """An S3 prefix's objects, listed page by page in a thread while they are already served.

    Iterating yields each object as soon as its page has come, and waits for the next page; an
    error while listing is raised there, after the objects listed before it. `len()` and
    indexing wait for the listing's end: shuffling needs the whole list, streaming does not.
    """

    def __init__(self, uri: str, pages: Iterator[list[DataObject]]) -> None:
        self.uri = uri
        self._objects: list[DataObject] = []
        self._done = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._pages = pages
        self._thread = threading.Thread(target=self._list, name="pipemode-list", daemon=True)
        self._thread.start()

    def _list(self) -> None:
        try:
            for page in self._pages:
                with self._changed:
                    self._objects.extend(page)
                    self._changed.notify_all()
        except BaseException as error:
            self._error = error
        finally:
            with self._changed:
                self._done = True
                self._changed.notify_all()

    def _wait(self, count: int | None) -> list[DataObject]:
        """The objects once more than `count` are listed (or all are, `count` None)."""
        with self._changed:
            while not self._done and (count is None or len(self._objects) <= count):
                self._changed.wait()
            return self._objects

    def wait_listed(self) -> None:
        self._wait(None)
        if self._error is not None:
            raise self._error

    def __iter__(self) -> Iterator[DataObject]:
        index = 0
        while True:
            objects = self._wait(index)
            # Appends never move the items before them: a slice of the listed ones is stable.
            batch = objects[index:]
            if not batch:
                if self._error is not None:
                    raise self._error
                return
            yield from batch
            index += len(batch)

    def __len__(self) -> int:
        self.wait_listed()
        return len(self._objects)

    def __bool__(self) -> bool:
        return bool(self._wait(0))

    @overload
    def __getitem__(self, index: int) -> DataObject: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[DataObject]: ...
    def __getitem__(self, index: int | slice) -> Any:
        self.wait_listed()
        return self._objects[index]


def _list_s3_prefix(uri: str) -> Sequence[DataObject]:
    """The first page now (a bad bucket or prefix is refused at job start), the rest streamed."""
    bucket, prefix = _split_s3_uri(uri)
    pages = _s3_pages(uri, bucket, prefix)
    first = next(pages, [])
    return StreamedListing(uri, itertools.chain([first], pages))


def _s3_pages(uri: str, bucket: str, prefix: str) -> Iterator[list[DataObject]]:
    folder = prefix[: prefix.rfind("/") + 1]
    request = {"Bucket": bucket, "Prefix": prefix}
    listed = 0
    while True:
        try:
            page = s3_client().list_objects_v2(**request)
        except JobConfigError:
            raise
        except Exception as error:
            after = f" after {listed} objects" if listed else ""
            raise JobConfigError(f"cannot list {uri}{after}: {describe_error(error)}") from error
        objects: list[DataObject] = [
            S3Object(
                bucket, item["Key"], item["Key"][len(folder) :], item.get("Size"), item.get("ETag")
            )
            for item in page.get("Contents", [])
            # A console-made "folder" marker is not data.
            if not (item["Key"].endswith("/") and item.get("Size", 0) == 0)
        ]
        listed += len(objects)
        yield objects  # S3 lists keys in UTF-8 binary order already
        if not page.get("IsTruncated"):
            return
        request["ContinuationToken"] = page["NextContinuationToken"]


def _list_local(path: Path) -> list[DataObject]:
    if path.is_file():
        return [LocalObject(path, path.name)]
    if not path.is_dir():
        raise JobConfigError(f"source {str(path)!r} is neither a file, a folder nor s3://")
    files = [p for p in path.rglob("*") if p.is_file()]
    keys = [(p.relative_to(path).as_posix(), p) for p in files]
    # As S3 orders keys, by the UTF-8 bytes of the relative path; fsencode gives a name's own
    # bytes even when they are not UTF-8, where str.encode() would raise.
    keys.sort(key=lambda item: os.fsencode(item[0]))
    return [LocalObject(p, key) for key, p in keys]


def _read_manifest(source: str) -> tuple[Any, Path | None]:
    if source.startswith("s3://"):
        bucket, key = _split_s3_uri(source)
        with S3Object(bucket, key, key).open() as body:
            return json.loads(body.read()), None
    path = Path(source)
    try:
        return json.loads(path.read_bytes()), path.parent
    except OSError as error:
        raise JobConfigError(f"cannot read manifest {source!r}: {error.strerror}") from None


def _list_manifest(source: str) -> list[DataObject]:
    try:
        manifest, folder = _read_manifest(source)
    except json.JSONDecodeError as error:
        raise JobConfigError(f"manifest {source} is not JSON: {error}") from None
    if (
        not isinstance(manifest, list)
        or not manifest
        or not isinstance(manifest[0], dict)
        or not isinstance(manifest[0].get("prefix"), str)
        or not all(isinstance(key, str) for key in manifest[1:])
    ):
        raise JobConfigError(
            f'manifest {source} must be a JSON list: {{"prefix": ...}} first, then keys'
        )
    prefix: str = manifest[0]["prefix"]
    objects: list[DataObject] = []
    for key in manifest[1:]:
        # SageMaker joins prefix and key as strings; a local prefix is relative to the manifest.
        uri = prefix + key
        if uri.startswith("s3://"):
            bucket, full_key = _split_s3_uri(uri)
            objects.append(S3Object(bucket, full_key, key))
        else:
            path = Path(uri) if folder is None else folder / uri
            if not path.is_file():
                raise JobConfigError(f"manifest {source} lists {str(path)!r}, which is no file")
            objects.append(LocalObject(path, key))
    return objects


def resolve(channel: Channel) -> Sequence[DataObject]:
    """The channel's objects in their natural order (key order, or the manifest's)."""
    if channel.s3_data_type == "AugmentedManifestFile":
        from pipemode.runner.manifest import manifest_object  # imports this module

        return [manifest_object(channel.source)]  # its lines are read each epoch
    if channel.s3_data_type == "ManifestFile":
        objects = _list_manifest(channel.source)
    elif channel.source.startswith("s3://"):
        objects = _list_s3_prefix(channel.source)
    else:
        objects = _list_local(Path(channel.source).expanduser())
    if not objects:
        raise JobConfigError(f"channel {channel.name!r}: no objects under {channel.source}")
    return objects


def epoch_stream(
    objects: Sequence[DataObject], channel: Channel, epoch: int, host_index: int, host_count: int
) -> Iterable[DataObject]:
    """`epoch_objects` as they come: without a shuffle, an epoch starts before its listing ends."""
    if channel.shuffle_seed is not None:
        return epoch_objects(objects, channel, epoch, host_index, host_count)
    if channel.distribution == "ShardedByS3Key" and host_count > 1:
        return itertools.islice(objects, host_index, None, host_count)
    return objects


def epoch_objects(
    objects: Sequence[DataObject], channel: Channel, epoch: int, host_index: int, host_count: int
) -> list[DataObject]:
    """What one host serves in one epoch: shuffled from the seed, then its shard.

    Every host shuffles with the same seed, so the shards of one epoch stay disjoint while a host
    sees different objects from epoch to epoch, as SageMaker does with ShuffleConfig.
    """
    order = list(objects)
    if channel.shuffle_seed is not None:
        # ShuffleConfig's Seed is any 64-bit integer; numpy seeds only with non-negative ones.
        rng = np.random.default_rng([channel.shuffle_seed % (1 << 64), epoch])
        order = [order[i] for i in rng.permutation(len(order))]
    if channel.distribution == "ShardedByS3Key" and host_count > 1:
        order = order[host_index::host_count]
    return order


def read_chunks(stream: BinaryIO, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def gunzip(chunks: Iterator[bytes], uri: str) -> Iterator[bytes]:
    """Decompresses a gzip stream (several members too, as `gzip -c a b` makes) as it arrives."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    consumed = member_start = 0
    try:
        for chunk in chunks:
            while chunk:
                out = decompressor.decompress(chunk, _MAX_GUNZIP_STEP)
                if out:
                    yield out
                rest = (
                    decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
                )
                consumed += len(chunk) - len(rest)
                chunk = rest
                if decompressor.eof:
                    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    member_start = consumed
        tail = decompressor.flush()
        if tail:
            yield tail
    except zlib.error as error:
        raise OSError(f"{uri}: bad gzip data near compressed byte {consumed}: {error}") from None
    if consumed > member_start and not decompressor.eof:
        raise OSError(f"{uri}: gzip stream truncated at compressed byte {consumed}")
