"""S3 channels, served by the runner from a real S3-API server (moto) on loopback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipemode.runner import Channel, JobConfigError
from pipemode.runner.sources import s3_client
from runner_helpers import fifos_under, moto_s3_server, recorded, run, script, use_s3_endpoint

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

_SECRET = "pipemode-test-secret-key-never-logged"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: Any) -> Iterator[Any]:
    """A fresh bucket; the runner's boto3 client reaches the server through AWS_ENDPOINT_URL."""
    use_s3_endpoint(monkeypatch, s3_endpoint, _SECRET)
    resource = boto3.resource("s3", endpoint_url=s3_endpoint)
    name = request.node.name.lower().replace("_", "-")[:50]
    yield resource.create_bucket(Bucket=name)
    s3_client.cache_clear()


def put(bucket: Any, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        bucket.put_object(Key=key, Body=body)


def test_an_s3_prefix_is_streamed_in_key_order(tmp_path: Path, bucket: Any) -> None:
    big = os.urandom(5 << 20)
    put(bucket, {"train/b": big, "train/a": b"first", "train/": b"", "other/x": b"no"})
    entry = script(
        tmp_path,
        """
        import hashlib
        epochs = [read_epoch("train", e) for e in range(2)]
        record("seen.json", [[len(e), e[:5].decode(), hashlib.sha256(e).hexdigest()]
                             for e in epochs])
        """,
    )
    result = run(tmp_path, entry, [Channel("train", f"s3://{bucket.name}/train/")])
    assert result.exit_code == 0, result.failure
    expected = [len(big) + 5, "first", hashlib.sha256(b"first" + big).hexdigest()]
    assert recorded(result.job_dir, "seen.json") == [expected, expected]
    assert fifos_under(result.job_dir) == []


def test_gzip_objects_from_s3_are_gunzipped(tmp_path: Path, bucket: Any) -> None:
    put(bucket, {"z/1.gz": gzip.compress(b"hello " * 1000), "z/2.gz": gzip.compress(b"world")})
    entry = script(tmp_path, "record('data.json', read_epoch('train', 0).decode())\n")
    channel = Channel("train", f"s3://{bucket.name}/z", compression="Gzip")
    result = run(tmp_path, entry, [channel])
    assert recorded(result.job_dir, "data.json") == "hello " * 1000 + "world"


def test_a_manifest_chooses_and_orders_the_objects(tmp_path: Path, bucket: Any) -> None:
    put(bucket, {"data/a": b"A", "data/b": b"B", "data/c": b"C"})
    manifest = [{"prefix": f"s3://{bucket.name}/data/"}, "c", "a"]
    put(bucket, {"manifests/train.json": json.dumps(manifest).encode()})
    entry = script(tmp_path, "record('data.json', read_epoch('train', 0).decode())\n")
    channel = Channel(
        "train", f"s3://{bucket.name}/manifests/train.json", s3_data_type="ManifestFile"
    )
    result = run(tmp_path, entry, [channel])
    assert recorded(result.job_dir, "data.json") == "CA"


def test_a_local_manifest_may_point_into_s3(tmp_path: Path, bucket: Any) -> None:
    put(bucket, {"d/x": b"X", "d/y": b"Y"})
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"prefix": f"s3://{bucket.name}/d/"}, "y", "x", "y"]))
    entry = script(tmp_path, "record('data.json', read_epoch('train', 0).decode())\n")
    result = run(tmp_path, entry, [Channel("train", str(manifest), s3_data_type="ManifestFile")])
    assert recorded(result.job_dir, "data.json") == "YXY"


def test_file_mode_downloads_the_hosts_shard(tmp_path: Path, bucket: Any) -> None:
    put(bucket, {f"f/{i}": str(i).encode() for i in range(4)})
    entry = script(
        tmp_path,
        "record('files.json', sorted(os.listdir(os.environ['SM_CHANNEL_TRAIN'])))\n",
    )
    channel = Channel(
        "train", f"s3://{bucket.name}/f/", input_mode="File", distribution="ShardedByS3Key"
    )
    result = run(tmp_path, entry, [channel], instance_count=2)
    assert result.exit_code == 0, result.failure
    shards = [recorded(result.job_dir, "files.json", host) for host in ("algo-1", "algo-2")]
    assert shards == [["0", "2"], ["1", "3"]]


def test_a_missing_prefix_is_refused_before_the_script_starts(tmp_path: Path, bucket: Any) -> None:
    entry = script(tmp_path, "raise SystemExit('must not run')\n")
    with pytest.raises(JobConfigError, match="no objects under s3://"):
        run(tmp_path, entry, [Channel("train", f"s3://{bucket.name}/nothing/")])
    with pytest.raises(JobConfigError, match="cannot list s3://no-such-bucket-here/x") as error:
        run(tmp_path, entry, [Channel("train", "s3://no-such-bucket-here/x")])
    assert _SECRET not in str(error.value)


def test_an_object_that_vanishes_fails_the_job_without_leaking_credentials(
    tmp_path: Path, bucket: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps([{"prefix": f"s3://{bucket.name}/"}, "missing-key"]))
    entry = script(tmp_path, "read_epoch('train', 0); import time; time.sleep(60)\n")
    result = run(tmp_path, entry, [Channel("train", str(manifest), s3_data_type="ManifestFile")])
    assert result.exit_code != 0
    assert f"s3://{bucket.name}/missing-key" in (result.failure or "")
    assert "NoSuchKey" in (result.failure or "")
    captured = capfd.readouterr()
    for text in (captured.out, captured.err, result.failure or "", result.summary()):
        assert _SECRET not in text


_READ_RECORDS = """
from pipemode import RecordReader
record("records.json", [[r.hex() for r in RecordReader(os.path.join(DATA, f"{c}_{e}"))]
                        for c in ("plain", "gzipped") for e in (0, 1)])
"""


def test_recordio_wrapping_makes_each_object_one_record(tmp_path: Path, bucket: Any) -> None:
    from pipemode import encode_example

    examples = [encode_example({"data": bytes([i]) * (i * 7), "labels": [i]}) for i in range(5)]
    # An object holding RecordIO's magic word: the writer splits it as dmlc does, the reader
    # joins it back.
    examples.append(b"a" + struct.pack("<I", 0xCED7230A) + b"b")
    put(bucket, {f"ex/{i:02d}": e for i, e in enumerate(examples)})
    put(bucket, {f"gz/{i:02d}.gz": gzip.compress(e) for i, e in enumerate(examples)})
    entry = script(tmp_path, _READ_RECORDS)
    channels = [
        Channel("plain", f"s3://{bucket.name}/ex/", record_wrapping="RecordIO"),
        Channel(
            "gzipped", f"s3://{bucket.name}/gz/", record_wrapping="RecordIO", compression="Gzip"
        ),
    ]
    result = run(tmp_path, entry, channels)
    assert result.exit_code == 0, result.failure
    expected = [e.hex() for e in examples]
    assert recorded(result.job_dir, "records.json") == [expected] * 4
