"""S3 channels over a faulty network: a moto server behind a proxy that delays, cuts and stalls.

No epoch may ever end short as if it were complete: a cut body is resumed with a ranged GET, an
object that cannot be read fails the job naming its URI and byte, in bounded time, and the FIFO
is not closed like a finished epoch. The same holds for local files that shrink and truncated gzip.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipemode.runner import Channel, JobConfigError, JobResult
from pipemode.runner.sources import s3_client
from runner_helpers import (
    fifos_under,
    folder_of_files,
    moto_s3_server,
    recorded,
    run,
    script,
    use_s3_endpoint,
)
from s3_proxy import CUT_PLACES, FaultyProxy, is_object_get

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(server: str, request: Any) -> Any:
    resource = boto3.resource(
        "s3",
        endpoint_url=server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    name = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:50]
    return resource.create_bucket(Bucket=name)


@pytest.fixture
def proxy(server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultyProxy]:
    """The proxy, with the runner's boto3 client pointed at it; no thread of either lingers."""
    before = set(threading.enumerate())
    with FaultyProxy(server) as faulty:
        use_s3_endpoint(monkeypatch, faulty.endpoint)
        # Small parts, so that a few MiB make a many-part object; short backoffs for the tests.
        monkeypatch.setenv("PIPEMODE_S3_PART_SIZE", str(256 << 10))
        yield faulty
    s3_client.cache_clear()
    # Ours and the proxy's, not the moto server's (it keeps a thread per open connection). A job
    # waits for its feeders only a grace period: on a loaded machine one may end just after.
    ours = ("pipemode", "test-proxy")
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith(ours):
            thread.join(30)
    lingering = [t.name for t in set(threading.enumerate()) - before if t.name.startswith(ours)]
    assert lingering == [], lingering


def put(bucket: Any, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        bucket.put_object(Key=key, Body=body)


def moto_backend() -> Any:
    """The moto server's own store (it runs in this process): puts that skip HTTP, and that
    land at once, even from inside a request the proxy is about to relay."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def job_failure(result: JobResult) -> str:
    """The reason in the job's output/failure, where a user reads it (and result.failure)."""
    assert result.exit_code != 0
    text = (result.job_dir / "output" / "failure").read_text()
    assert text == result.failure
    return text


def never_ended(result: JobResult) -> bool:
    """True if the script never saw its epoch end (it records `ended.json` when it does)."""
    return not (result.job_dir / "algo-1" / "output" / "data" / "ended.json").exists()


_DIGESTS = """
import hashlib
record("epochs.json", [hashlib.sha256(read_epoch("train", e)).hexdigest() for e in range(EPOCHS)])
"""


def _digest_script(tmp_path: Path, epochs: int) -> Path:
    return script(tmp_path, f"EPOCHS = {epochs}\n" + _DIGESTS)


def test_a_cut_every_third_response_still_serves_every_epoch_exactly(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy
) -> None:
    objects = {f"d/{i:03d}": os.urandom(1000 + 37 * i) for i in range(40)}
    objects["d/big"] = os.urandom(3 << 20)  # twelve ranged parts
    objects["d/empty"] = b""
    put(bucket, objects)
    proxy.cut_every = 3
    proxy.latency = 0.002
    result = run(
        tmp_path, _digest_script(tmp_path, 2), [Channel("train", f"s3://{bucket.name}/d/")]
    )
    assert result.exit_code == 0, result.failure
    whole = hashlib.sha256(b"".join(objects[k] for k in sorted(objects))).hexdigest()
    assert recorded(result.job_dir, "epochs.json") == [whole, whole]
    assert proxy.cuts >= 20
    assert fifos_under(result.job_dir) == []


@pytest.mark.parametrize("place", CUT_PLACES)
def test_a_cut_at_any_place_of_a_response_is_resumed(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy, place: str
) -> None:
    data = os.urandom(600_000)
    gzipped = gzip.compress(data)
    put(bucket, {"one/x": data, "gz/x.gz": gzipped, "wrapped/x": data})
    proxy.cut_every = 2
    proxy.cut_at = place
    entry = script(
        tmp_path,
        """
        import hashlib
        from pipemode import RecordReader
        plain = read_epoch("plain", 0)
        gz = read_epoch("gz", 0)
        wrapped = list(RecordReader(os.path.join(DATA, "wrapped_0")))
        record("seen.json", [hashlib.sha256(d).hexdigest() for d in [plain, gz, *wrapped]])
        """,
    )
    channels = [
        Channel("plain", f"s3://{bucket.name}/one/"),
        Channel("gz", f"s3://{bucket.name}/gz/", compression="Gzip"),
        Channel("wrapped", f"s3://{bucket.name}/wrapped/", record_wrapping="RecordIO"),
    ]
    result = run(tmp_path, entry, channels)
    assert result.exit_code == 0, result.failure
    assert recorded(result.job_dir, "seen.json") == [hashlib.sha256(data).hexdigest()] * 3
    assert proxy.cuts >= 3


def test_manifest_objects_of_unknown_size_are_resumed_part_by_part(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy
) -> None:
    # A manifest gives no sizes: the first part's response tells it, the rest come as ranges.
    objects = {"m/big": os.urandom(1_100_000), "m/small": b"small", "m/empty": b""}
    put(bucket, objects)
    manifest = tmp_path / "manifest.json"
    order = ["big", "small", "empty", "big"]
    manifest.write_text(json.dumps([{"prefix": f"s3://{bucket.name}/m/"}, *order]))
    proxy.cut_every = 3
    channel = Channel("train", str(manifest), s3_data_type="ManifestFile")
    result = run(tmp_path, _digest_script(tmp_path, 2), [channel])
    assert result.exit_code == 0, result.failure
    whole = hashlib.sha256(b"".join(objects[f"m/{k}"] for k in order)).hexdigest()
    assert recorded(result.job_dir, "epochs.json") == [whole, whole]
    ranged = [head for head in proxy.requests if b"\r\nrange: bytes=" in head.lower()]
    assert len(ranged) >= 2 * 2 * 4  # each epoch, each "big": 4 parts after the first


def test_file_mode_downloads_are_resumed_too(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy
) -> None:
    objects = {f"f/{i}": os.urandom(300_000 + i) for i in range(4)}
    put(bucket, objects)
    proxy.cut_every = 2
    entry = script(
        tmp_path,
        """
        import hashlib
        folder = os.environ["SM_CHANNEL_TRAIN"]
        record("files.json", {name: hashlib.sha256(open(os.path.join(folder, name), "rb").read())
                              .hexdigest() for name in os.listdir(folder)})
        """,
    )
    channel = Channel("train", f"s3://{bucket.name}/f/", input_mode="File")
    result = run(tmp_path, entry, [channel])
    assert result.exit_code == 0, result.failure
    expected = {k[2:]: hashlib.sha256(v).hexdigest() for k, v in objects.items()}
    assert recorded(result.job_dir, "files.json") == expected
    assert proxy.cuts >= 2


def test_an_object_rewritten_to_another_size_fails_the_job(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(bucket, {"r/a": b"a" * 1000, "r/b": b"b" * 1000})
    monkeypatch.setenv("PIPEMODE_S3_ATTEMPTS", "2")
    entry = script(
        tmp_path,
        f"""
        import boto3
        first = read_epoch("train", 0)
        boto3.client("s3").put_object(Bucket={bucket.name!r}, Key="r/b", Body=b"longer" * 500)
        data = read_epoch("train", 1)
        record("ended.json", len(data))
        """,
    )
    result = run(tmp_path, entry, [Channel("train", f"s3://{bucket.name}/r/")])
    failure = job_failure(result)
    # Every GET carries If-Match on the listing's ETag (the size is checked too, behind it).
    assert f"cannot read s3://{bucket.name}/r/b at byte 0: it changed during the job" in failure
    assert never_ended(result)


_READ_THEN_RECORD = """
data = read_epoch("train", 0)
record("ended.json", len(data))  # must not happen: the epoch never ends short
"""


@pytest.mark.parametrize(
    ("listed_by", "rewrite"),
    [("prefix", "same size"), ("manifest", "same size"), ("manifest", "longer")],
)
def test_an_object_rewritten_between_its_parts_fails_the_job_instead_of_being_spliced(
    tmp_path: Path,
    bucket: Any,
    proxy: FaultyProxy,
    monkeypatch: pytest.MonkeyPatch,
    listed_by: str,
    rewrite: str,
) -> None:
    # Parts of 256 KiB (the proxy fixture's), fetched one at a time so that they go in order:
    # the object is rewritten just before its third part is read, two parts in.
    part = 256 << 10
    old = os.urandom(4 * part + 1000)
    new = os.urandom(len(old) + (0 if rewrite == "same size" else part))
    put(bucket, {"v/x": old})
    monkeypatch.setenv("PIPEMODE_S3_CONCURRENCY", "1")
    third_part = b"\r\nrange: bytes=%d-" % (2 * part)
    rewritten: list[bytes] = []

    def rewrite_before_the_third_part(head: bytes) -> None:
        if third_part in head.lower() and not rewritten:
            moto_backend().put_object(bucket.name, "v/x", new)
            rewritten.append(head)

    proxy.on_request = rewrite_before_the_third_part
    if listed_by == "prefix":  # listed with its size and ETag
        channel = Channel("train", f"s3://{bucket.name}/v/")
    else:  # neither known: both come with the first part
        manifest = tmp_path / "manifest.json"
        manifest.write_text(json.dumps([{"prefix": f"s3://{bucket.name}/v/"}, "x"]))
        channel = Channel("train", str(manifest), s3_data_type="ManifestFile")
    result = run(tmp_path, script(tmp_path, _READ_THEN_RECORD), [channel])
    assert rewritten
    failure = job_failure(result)
    # The ETag pins every part; a longer object fails the size check too, whichever comes first.
    reason = "it changed during the job" + ("" if rewrite == "same size" else "|it holds")
    at = rf"cannot read s3://{bucket.name}/v/x at byte {2 * part}: ({reason})"
    assert re.search(at, failure), failure
    assert never_ended(result)


def test_an_object_that_cannot_be_read_fails_the_job_in_bounded_time(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(bucket, {"d/a": b"a" * 1000, "d/b": os.urandom(200_000), "d/c": b"c"})
    monkeypatch.setenv("PIPEMODE_S3_ATTEMPTS", "3")
    # Every GetObject of d/b is cut mid-body, however often it is resumed.
    proxy.cut_when = lambda head: b"/d/b " in head.split(b"\r\n")[0]
    proxy.cut_every = 1
    started = time.monotonic()
    result = run(
        tmp_path, script(tmp_path, _READ_THEN_RECORD), [Channel("train", f"s3://{bucket.name}/d/")]
    )
    assert time.monotonic() - started < 20
    failure = job_failure(result)
    match = re.search(rf"cannot read s3://{bucket.name}/d/b at byte (\d+): (.*)", failure)
    assert match, failure
    assert 100_000 <= int(match.group(1)) < 200_000
    # Each cut moves on by half the rest: the failures are counted in all, not only in a row.
    assert re.search(r"after 1[0-2] attempts", match.group(2))
    assert never_ended(result)
    assert fifos_under(result.job_dir) == []


@pytest.mark.parametrize("stall_at", ["header", "mid-body"])
def test_a_stalled_server_times_out(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy, monkeypatch: pytest.MonkeyPatch, stall_at: str
) -> None:
    put(bucket, {"d/a": os.urandom(100_000)})
    monkeypatch.setenv("PIPEMODE_S3_READ_TIMEOUT", "0.5")
    monkeypatch.setenv("PIPEMODE_S3_ATTEMPTS", "2")
    proxy.stall_at = stall_at
    started = time.monotonic()
    result = run(
        tmp_path, script(tmp_path, _READ_THEN_RECORD), [Channel("train", f"s3://{bucket.name}/d/")]
    )
    assert time.monotonic() - started < 20
    failure = job_failure(result)
    assert re.search(rf"cannot read s3://{bucket.name}/d/a at byte \d+: .*timeout", failure, re.I)
    assert never_ended(result)
    # PIPEMODE_S3_ATTEMPTS GETs in all: botocore retries none of them within the reader's own.
    assert sum(map(is_object_get, proxy.requests)) == 2


def test_a_truncated_gzip_object_on_s3_fails_the_job_naming_it_and_the_byte(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy
) -> None:
    cut = gzip.compress(os.urandom(100_000))[:-100]
    put(bucket, {"gz/a.gz": gzip.compress(b"fine"), "gz/b.gz": cut})
    result = run(
        tmp_path,
        script(tmp_path, _READ_THEN_RECORD),
        [Channel("train", f"s3://{bucket.name}/gz/", compression="Gzip")],
    )
    failure = job_failure(result)
    truncated = f"s3://{bucket.name}/gz/b.gz: gzip stream truncated at compressed byte {len(cut)}"
    assert truncated in failure, failure
    assert never_ended(result)


@pytest.mark.parametrize("shuffled", [False, True])
def test_a_listing_page_that_keeps_failing_fails_the_job_naming_the_prefix(
    tmp_path: Path,
    bucket: Any,
    proxy: FaultyProxy,
    monkeypatch: pytest.MonkeyPatch,
    shuffled: bool,
) -> None:
    backend = moto_backend()
    for i in range(1500):  # two pages: the first is listed at job start, the second in a thread
        backend.put_object(bucket.name, f"l/{i:05d}", b"%05d" % i)
    monkeypatch.setenv("PIPEMODE_S3_ATTEMPTS", "2")
    # Every request for the second page gets S3's 500 InternalError, retried or not.
    proxy.fail_when = lambda head: b"continuation-token=" in head.split(b"\r\n", 1)[0]
    channel = Channel("train", f"s3://{bucket.name}/l/", shuffle_seed=1 if shuffled else None)
    started = time.monotonic()
    result = run(tmp_path, script(tmp_path, _READ_THEN_RECORD), [channel])
    assert time.monotonic() - started < 20
    failure = job_failure(result)
    listing = rf"cannot list s3://{bucket.name}/l/ after 1000 objects: InternalError"
    assert re.search(listing, failure), failure
    assert proxy.failed == 2  # PIPEMODE_S3_ATTEMPTS tries, no more
    assert never_ended(result)
    assert fifos_under(result.job_dir) == []


def test_small_objects_are_fetched_ahead_concurrently_and_in_order(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy
) -> None:
    objects = {f"s/{i:04d}": os.urandom(2000) for i in range(64)}
    put(bucket, objects)
    proxy.latency = 0.02
    result = run(
        tmp_path, _digest_script(tmp_path, 1), [Channel("train", f"s3://{bucket.name}/s/")]
    )
    assert result.exit_code == 0, result.failure
    whole = hashlib.sha256(b"".join(objects[k] for k in sorted(objects))).hexdigest()
    assert recorded(result.job_dir, "epochs.json") == [whole]
    # The default is 16 GETs at once; one at a time would give 1.
    assert proxy.peak_in_flight >= 8


def test_a_manifest_of_100000_objects_is_served_with_bounded_fetch_ahead(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 64 << 10
    put(bucket, {f"m/{i:02d}": bytes([i]) * size for i in range(50)})
    manifest = tmp_path / "manifest.json"
    keys = [f"{i % 50:02d}" for i in range(100_000)]
    manifest.write_text(json.dumps([{"prefix": f"s3://{bucket.name}/m/"}, *keys]))
    monkeypatch.setenv("PIPEMODE_S3_PART_SIZE", str(size))
    monkeypatch.setenv("PIPEMODE_S3_MAX_BYTES_IN_FLIGHT", str(8 * size))
    # The script reads 1 MiB, then lets the feeder run ahead for a second before counting the
    # GETs: 16 objects read, 16 in the 1 MiB pipe, 1 being written and 8 fetched ahead.
    entry = script(
        tmp_path,
        f"""
        with open_epoch("train", 0) as fifo:
            first = fifo.read(1 << 20)
            time.sleep(1)
            with open({str(tmp_path / "go")!r}, "w"):
                pass
            while not os.path.exists({str(tmp_path / "counted")!r}):
                time.sleep(0.01)
            record("first.json", first == b"".join(bytes([i]) * {size} for i in range(16)))
        """,
    )
    counts: list[int] = []

    def count_gets() -> None:
        while not (tmp_path / "go").exists():
            time.sleep(0.01)
        counts.append(sum(1 for head in list(proxy.requests) if is_object_get(head)))
        (tmp_path / "counted").touch()

    counter = threading.Thread(target=count_gets)
    counter.start()
    channel = Channel("train", str(manifest), s3_data_type="ManifestFile")
    result = run(tmp_path, entry, [channel])
    counter.join()
    assert result.exit_code == 0, result.failure
    assert recorded(result.job_dir, "first.json") is True
    assert 32 <= counts[0] <= 50, counts


# -- local sources ---------------------------------------------------------------------------


def test_a_local_file_that_shrinks_while_streamed_fails_the_job(tmp_path: Path) -> None:
    data = folder_of_files(tmp_path / "d", {"big": os.urandom(32 << 20)})
    entry = script(
        tmp_path,
        f"""
        with open_epoch("train", 0) as fifo:
            first = fifo.read(1 << 20)
            os.truncate({str(data / "big")!r}, 2 << 20)
            rest = fifo.read()
        record("ended.json", len(first) + len(rest))
        """,
    )
    result = run(tmp_path, entry, [Channel("train", str(data))])
    failure = job_failure(result)
    shrunk = rf"cannot read {re.escape(str(data / 'big'))} at byte \d+: the file ended there"
    assert re.search(shrunk, failure), failure
    assert never_ended(result)


def test_a_local_gzip_file_that_shrinks_while_streamed_fails_the_job(tmp_path: Path) -> None:
    # Not sendfile: a gzip file goes through the source's reader, chunk by chunk, as it is read.
    # Cut where its first member ends, the rest is valid gzip: only the reader can tell.
    first_member = gzip.compress(os.urandom(8 << 20), compresslevel=1)
    packed = first_member + gzip.compress(os.urandom(8 << 20), compresslevel=1)
    data = folder_of_files(tmp_path / "d", {"big.gz": packed})
    entry = script(
        tmp_path,
        f"""
        with open_epoch("train", 0) as fifo:
            first = fifo.read(1 << 20)  # the feeder has read a few MiB at most
            os.truncate({str(data / "big.gz")!r}, {len(first_member)})
            rest = fifo.read()
        record("ended.json", len(first) + len(rest))
        """,
    )
    result = run(tmp_path, entry, [Channel("train", str(data), compression="Gzip")])
    failure = job_failure(result)
    shrunk = (
        f"cannot read {data / 'big.gz'} at byte {len(first_member)}: the file ended there, "
        f"short of the {len(packed)} bytes it held when opened"
    )
    assert shrunk in failure, failure
    assert never_ended(result)


def test_a_truncated_gzip_member_fails_the_job_without_ending_the_epoch(tmp_path: Path) -> None:
    whole = gzip.compress(os.urandom(100_000))
    data = folder_of_files(tmp_path / "d", {"a.gz": gzip.compress(b"fine"), "b.gz": whole[:-100]})
    result = run(
        tmp_path,
        script(tmp_path, _READ_THEN_RECORD),
        [Channel("train", str(data), compression="Gzip")],
    )
    failure = job_failure(result)
    truncated = f"{data / 'b.gz'}: gzip stream truncated at compressed byte {len(whole) - 100}"
    assert truncated in failure, failure
    assert never_ended(result)


def test_a_long_listing_is_streamed_while_it_goes_on(
    tmp_path: Path, bucket: Any, proxy: FaultyProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    size = 5 * 3200
    for i in range(2500):  # three pages of a listing
        backend.put_object(bucket.name, f"l/{i:05d}", b"%05d" % i * (size // 5))
    monkeypatch.setenv("PIPEMODE_S3_MAX_BYTES_IN_FLIGHT", str(4 * size))
    # The listing starts with the job, the GETs once the script opens its FIFO: each of the
    # three pages must take longer than a Python start-up on a busy machine (CI saw 0.05 s lose).
    proxy.latency = 0.5
    # The script reads the first objects and leaves: no need to fetch 2,500 of them.
    entry = script(
        tmp_path,
        f"""
        head = read_epoch("train", 0, limit=20 * {size})
        record("ok.json", head == b"".join(b"%05d" % i * {size // 5} for i in range(20)))
        """,
    )
    result = run(tmp_path, entry, [Channel("train", f"s3://{bucket.name}/l/")])
    for thread in threading.enumerate():
        if thread.name == "pipemode-list":
            thread.join(30)  # the listing goes on to its end, in the background
    assert result.exit_code == 0, result.failure
    assert recorded(result.job_dir, "ok.json") is True
    kinds = ["get" if is_object_get(head) else "list" for head in proxy.requests]
    assert kinds.count("list") == 3
    assert kinds.index("get") < len(kinds) - 1 - kinds[::-1].index("list")
    assert kinds.count("get") < 200


def test_s3_settings_come_from_the_environment() -> None:
    from pipemode.runner.fetch import S3Settings

    settings = S3Settings.from_environment(
        {"PIPEMODE_S3_CONCURRENCY": "4", "PIPEMODE_S3_READ_TIMEOUT": "2.5"}
    )
    assert (settings.concurrency, settings.read_timeout) == (4, 2.5)
    assert settings.part_size == S3Settings().part_size
    with pytest.raises(JobConfigError, match="PIPEMODE_S3_PART_SIZE must be a number"):
        S3Settings.from_environment({"PIPEMODE_S3_PART_SIZE": "8MB"})
    with pytest.raises(JobConfigError, match="concurrency must be positive"):
        S3Settings.from_environment({"PIPEMODE_S3_CONCURRENCY": "0"})
