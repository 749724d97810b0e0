"""Where a channel's bytes come from: local files and folders, S3 prefixes and manifests.

A source resolves once, at job start, into an ordered list of objects (like S3 keys). Each epoch
then takes that list, shuffled from the channel's seed and sharded for the host, and streams the
objects one after another. S3 objects are read while they are served, never downloaded first.
"""

from __future__ import annotations

import functools
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np

from pipemode.errors import JobConfigError
from pipemode.runner.channels import Channel

__all__ = ["LocalObject", "S3Object", "epoch_objects", "gunzip", "read_chunks", "resolve"]

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
        return open(self.path, "rb", buffering=0)


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    # The part of the key below the channel's prefix folder: the file's name in File mode.
    relative_key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def open(self) -> BinaryIO:
        try:
            response = s3_client().get_object(Bucket=self.bucket, Key=self.key)
        except Exception as error:
            raise OSError(f"cannot read {self.uri}: {_describe(error)}") from error
        body: BinaryIO = response["Body"]
        return body


DataObject = Union[LocalObject, S3Object]


def relative_name(obj: DataObject) -> str:
    """The object's path below its channel folder, for File-mode channels."""
    return obj.key if isinstance(obj, LocalObject) else obj.relative_key


@functools.cache
def s3_client() -> Any:
    """One boto3 S3 client for the process (clients are thread-safe, sessions are not).

    boto3 is the optional extra `s3`, imported only when a channel reads from S3. Credentials come
    from boto3's usual chain; AWS_ENDPOINT_URL(_S3) points it at another S3-API server.
    """
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise JobConfigError("s3:// sources need boto3: pip install 'pipemode[s3]'") from None
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return boto3.client("s3", endpoint_url=endpoint or None)


def _describe(error: Exception) -> str:
    # botocore's ClientError carries the service's code and message; nothing secret is in them.
    response = getattr(error, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', 'error')}: {err.get('Message', '')}".rstrip(": ")
    return f"{type(error).__name__}: {error}"


def _split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise JobConfigError(f"{uri!r} names no bucket")
    return bucket, key


def _list_s3_prefix(uri: str) -> list[DataObject]:
    bucket, prefix = _split_s3_uri(uri)
    folder = prefix[: prefix.rfind("/") + 1]
    objects: list[DataObject] = []
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/") and item.get("Size", 0) == 0:
                    continue  # a console-made "folder" marker, not data
                objects.append(S3Object(bucket, key, key[len(folder) :]))
    except JobConfigError:
        raise
    except Exception as error:
        raise JobConfigError(f"cannot list {uri}: {_describe(error)}") from error
    return objects  # S3 lists keys in UTF-8 binary order already


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


def resolve(channel: Channel) -> list[DataObject]:
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


def epoch_objects(
    objects: list[DataObject], channel: Channel, epoch: int, host_index: int, host_count: int
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
