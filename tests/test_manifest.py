"""Augmented manifests in the runner: the bytes each FIFO gets, from local files and from S3.

Every case runs twice, with the manifest and its objects in a local folder and in a bucket of a
real S3-API server (moto) on loopback. The expected bytes are built here, independently of the
runner: RecordIO framed by hand, attribute texts written out literally.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from pipemode.runner import Channel, JobConfigError
from pipemode.runner.sources import s3_client
from runner_helpers import fifos_under, free_port, recorded, run, script, use_s3_endpoint

MAGIC = 0xCED7230A


def rec(payload: bytes) -> bytes:
    """One single-part RecordIO record, as the dmlc format defines it."""
    return struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)


def records(stream: bytes) -> list[bytes]:
    """Splits a stream of single-part RecordIO records (checks the framing on the way)."""
    out, offset = [], 0
    while offset < len(stream):
        magic, length = struct.unpack_from("<II", stream, offset)
        assert magic == MAGIC and length >> 29 == 0, offset
        out.append(stream[offset + 8 : offset + 8 + length])
        offset += 8 + length + (-length % 4)
    assert offset == len(stream)
    return out


# The script saves each epoch's bytes whole (or their digest and length, for big epochs).
_SAVE_EPOCHS = """
import hashlib
for epoch in range(int(os.environ.get("EPOCHS", "1"))):
    data = read_epoch("train", epoch)
    if os.environ.get("DIGEST"):
        record(f"epoch{epoch}.json", [len(data), hashlib.sha256(data).hexdigest()])
    else:
        with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], f"epoch{epoch}.bin"), "wb") as f:
            f.write(data)
"""


def epoch_bytes(result: Any, epoch: int = 0, host: str = "algo-1") -> bytes:
    return (result.job_dir / host / "output" / "data" / f"epoch{epoch}.bin").read_bytes()


class Store:
    """Where a test's manifest and objects live: a local folder or an S3 bucket."""

    def __init__(self, root: Path, bucket: Any = None) -> None:
        self.root = root
        self.bucket = bucket

    def put(self, name: str, data: bytes) -> str:
        """Stores `data`; returns how a manifest line refers to it."""
        if self.bucket is not None:
            self.bucket.put_object(Key=name, Body=data)
            return f"s3://{self.bucket.name}/{name}"
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return name  # relative to the manifest's folder

    def manifest(self, lines: list[str | dict[str, Any]], name: str = "m.manifest") -> str:
        text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
        ref = self.put(name, (text + "\n").encode())
        return ref if self.bucket is not None else str(self.root / name)

    def manifest_from(self, path: Path) -> str:
        """Stores the manifest written at `path`, without holding it in memory."""
        if self.bucket is None:
            return str(path)
        self.bucket.upload_file(str(path), path.name)
        return f"s3://{self.bucket.name}/{path.name}"

    def missing(self, name: str) -> str:
        return f"s3://{self.bucket.name}/{name}" if self.bucket is not None else name


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in a process of its own, so that what it holds in memory is not counted
    in the runner's peak (the runner's feeders run in this process)."""
    pytest.importorskip("moto.server")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(params=["local", "s3"])
def store(request: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    root = tmp_path / "data"
    root.mkdir()
    if request.param == "local":
        yield Store(root)
        return
    boto3 = pytest.importorskip("boto3")
    endpoint = request.getfixturevalue("s3_endpoint")
    use_s3_endpoint(monkeypatch, endpoint)
    name = request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:50]
    yield Store(root, boto3.resource("s3", endpoint_url=endpoint).create_bucket(Bucket=name))
    s3_client.cache_clear()


def manifest_channel(source: str, names: list[str], **options: Any) -> Channel:
    return Channel(
        "train",
        source,
        s3_data_type="AugmentedManifestFile",
        attribute_names=tuple(names),
        **options,
    )


def run_epochs(tmp_path: Path, channel: Channel, epochs: int = 1, **options: Any) -> Any:
    entry = script(tmp_path, _SAVE_EPOCHS)
    env = {"EPOCHS": str(epochs), **options.pop("environment", {})}
    return run(tmp_path, entry, [channel], environment=env, **options)


# -- what each attribute streams -----------------------------------------------------------------


def _mixed_lines(store: Store) -> tuple[list[str | dict[str, Any]], list[list[bytes]]]:
    """Lines with every kind of value, and each line's expected attribute bytes, by hand."""
    cat, dog = os.urandom(3000), b"\xff\xd8dog"
    cat_ref, dog_ref = store.put("img/cat.jpg", cat), store.put("img/dog.jpg", dog)
    ref = json.dumps  # a reference as a JSON string
    lines: list[str | dict[str, Any]] = [
        # Attributes in another order than AttributeNames, and one that is not asked for.
        '{"class": "0", "ignored": [1, 2], "source-ref": '
        + ref(cat_ref)
        + ', "meta": {"b": 1.50, "a": "é"}}',
        "",  # a blank line is no line
        '{"source-ref": ' + ref(dog_ref) + ', "class": 1, "meta": [true, false, null, 1e3, "x y"]}',
        '{"source-ref": ' + ref(dog_ref) + ', "class": -2.50, "meta": "[1, 0, 1]"}',
        '{"source-ref": ' + ref(cat_ref) + ', "class": true, "meta": null}',
    ]
    expected = [
        [cat, b"0", '{"b":1.50,"a":"é"}'.encode()],
        [dog, b"1", b'[true,false,null,1e3,"x y"]'],
        [dog, b"-2.50", b"[1, 0, 1]"],
        [cat, b"true", b"null"],
    ]
    return lines, expected


@pytest.mark.parametrize("wrapping", ["RecordIO", "None"])
def test_each_line_streams_its_attributes_in_attribute_names_order(
    tmp_path: Path, store: Store, wrapping: str
) -> None:
    lines, expected = _mixed_lines(store)
    channel = manifest_channel(
        store.manifest(lines), ["source-ref", "class", "meta"], record_wrapping=wrapping
    )
    result = run_epochs(tmp_path, channel, epochs=2)
    assert result.exit_code == 0, result.failure
    frame = rec if wrapping == "RecordIO" else (lambda value: value)
    want = b"".join(frame(value) for line in expected for value in line)
    assert epoch_bytes(result, 0) == want
    assert epoch_bytes(result, 1) == want  # every epoch streams the manifest again
    assert fifos_under(result.job_dir) == []


def test_an_object_holding_the_magic_word_is_still_one_record(tmp_path: Path, store: Store) -> None:
    tricky = struct.pack("<I", MAGIC) * 3 + b"tail"
    lines = [{"a-ref": store.put("tricky", tricky)}]
    channel = manifest_channel(store.manifest(lines), ["a-ref"], record_wrapping="RecordIO")
    result = run_epochs(tmp_path, channel)
    assert result.exit_code == 0, result.failure
    assert epoch_bytes(result) == rec(tricky)


# -- the readers, in a script the runner runs ---------------------------------------------------

READER_NAMES = ["image-ref", "class", "name"]

# Reads two epochs with pipemode's framework-free reader, or its torch dataset, and records each
# line's attributes (hex, for JSON).
_READ_LINES = """
import pipemode
names = json.loads(os.environ["NAMES"])
if os.environ["READER"] == "torch":
    import pipemode.torch
    dataset = pipemode.torch.PipeModeDataset("train", attribute_names=names)
    epochs = [list(dataset) for _ in range(2)]  # each iteration reads the next epoch
else:
    channel = pipemode.PipeModeChannel("train", attribute_names=names)
    epochs = [list(channel.next_epoch()) for _ in range(2)]
record("lines.json", [[{k: v.hex() for k, v in line.items()} for line in e] for e in epochs])
"""


def _reader_manifest(store: Store) -> tuple[str, list[dict[str, str]]]:
    """A manifest of objects of several sizes (one empty) and labels, and each line's
    attributes as the script records them, taken from the manifest's values here."""
    sizes = [0, 1, 3, 4, 5, 1000, 70_000] + [17 * i for i in range(1, 19)]
    objects = [os.urandom(size) for size in sizes]
    lines: list[str | dict[str, Any]] = []
    for i, data in enumerate(objects):
        line = {"name": f"line {i}", "image-ref": store.put(f"img/{i}.bin", data), "class": i % 4}
        lines.append(line if i % 2 else dict(reversed(line.items())))  # the JSON's order varies
    expected = [
        {"image-ref": data, "class": b"%d" % (i % 4), "name": f"line {i}".encode()}
        for i, data in enumerate(objects)
    ]
    return store.manifest(lines), [{k: v.hex() for k, v in line.items()} for line in expected]


@pytest.mark.parametrize("reader", ["channel", pytest.param("torch", marks=pytest.mark.torch)])
def test_a_script_reads_each_line_whole_with_attribute_names(tmp_path: Path, reader: str) -> None:
    if reader == "torch":
        pytest.importorskip("torch")
    source, expected = _reader_manifest(Store(tmp_path))
    channel = manifest_channel(source, READER_NAMES, record_wrapping="RecordIO")
    environment = {"READER": reader, "NAMES": json.dumps(READER_NAMES)}
    result = run(tmp_path, script(tmp_path, _READ_LINES), [channel], environment=environment)
    assert result.exit_code == 0, result.failure
    assert recorded(result.job_dir, "lines.json") == [expected, expected]


def test_an_estimator_fit_on_an_augmented_manifest_hands_the_script_whole_lines(
    tmp_path: Path,
) -> None:
    from pipemode.runner import Estimator, ShuffleConfig, TrainingInput

    source, expected = _reader_manifest(Store(tmp_path))
    estimator = Estimator(
        script(tmp_path, _READ_LINES),
        output_path=tmp_path / "out",
        environment={"READER": "channel", "NAMES": json.dumps(READER_NAMES)},
    )
    train = TrainingInput(
        source,
        s3_data_type="AugmentedManifestFile",
        attribute_names=READER_NAMES,
        record_wrapping="RecordIO",
        shuffle_config=ShuffleConfig(seed=11),
    )
    result = estimator.fit({"train": train}, job_name="manifest")
    epochs = recorded(result.job_dir, "lines.json")
    # Shuffled lines, each line's attributes still together.
    key = json.dumps
    for epoch in epochs:
        assert sorted(epoch, key=key) == sorted(expected, key=key)
    assert epochs[0] != expected and epochs[0] != epochs[1]


# -- order: shuffle and shards ---------------------------------------------------------------


def _numbered(store: Store, count: int) -> list[str | dict[str, Any]]:
    return [
        {"n": index, "x-ref": store.put(f"o/{index}", b"object %d" % index)}
        for index in range(count)
    ]


def _line_numbers(stream: bytes) -> list[int]:
    values = records(stream)
    pairs = list(zip(values[::2], values[1::2]))
    assert all(obj == b"object " + n for n, obj in pairs)  # each line's attributes together
    return [int(n) for n, _ in pairs]


def test_shuffle_config_reorders_the_lines_every_epoch(tmp_path: Path, store: Store) -> None:
    source = store.manifest(_numbered(store, 30))
    channel = manifest_channel(source, ["n", "x-ref"], record_wrapping="RecordIO", shuffle_seed=7)
    result = run_epochs(tmp_path, channel, epochs=2)
    assert result.exit_code == 0, result.failure
    orders = [_line_numbers(epoch_bytes(result, epoch)) for epoch in range(2)]
    assert all(sorted(order) == list(range(30)) for order in orders)
    assert orders[0] != orders[1] and orders[0] != list(range(30))
    (tmp_path / "again").mkdir()
    again = run_epochs(tmp_path / "again", channel)
    assert _line_numbers(epoch_bytes(again, 0)) == orders[0]  # the seed decides the order


def test_sharded_by_s3_key_deals_the_lines_out_to_the_hosts_in_turn(
    tmp_path: Path, store: Store
) -> None:
    source = store.manifest(_numbered(store, 11))
    channel = manifest_channel(
        source, ["n", "x-ref"], record_wrapping="RecordIO", distribution="ShardedByS3Key"
    )
    result = run_epochs(tmp_path, channel, instance_count=2)
    assert result.exit_code == 0, result.failure
    assert _line_numbers(epoch_bytes(result, 0, "algo-1")) == [0, 2, 4, 6, 8, 10]
    assert _line_numbers(epoch_bytes(result, 0, "algo-2")) == [1, 3, 5, 7, 9]


def test_sharded_and_shuffled_hosts_split_each_epoch_without_overlap(
    tmp_path: Path, store: Store
) -> None:
    source = store.manifest(_numbered(store, 20))
    channel = manifest_channel(
        source,
        ["n", "x-ref"],
        record_wrapping="RecordIO",
        distribution="ShardedByS3Key",
        shuffle_seed=3,
    )
    result = run_epochs(tmp_path, channel, epochs=2, instance_count=2)
    assert result.exit_code == 0, result.failure
    for epoch in range(2):
        shards = [_line_numbers(epoch_bytes(result, epoch, h)) for h in ("algo-1", "algo-2")]
        assert sorted(shards[0] + shards[1]) == list(range(20))
        assert len(shards[0]) == len(shards[1]) == 10


# -- errors --------------------------------------------------------------------------------------


def _fails_with(tmp_path: Path, channel: Channel, *parts: str) -> str:
    result = run_epochs(tmp_path, channel)
    assert result.exit_code != 0
    failure = result.failure or ""
    for part in parts:
        assert part in failure, failure
    assert failure == (result.job_dir / "output" / "failure").read_text()
    return failure


def test_a_line_without_a_named_attribute_fails_the_job(tmp_path: Path, store: Store) -> None:
    ref = store.put("a.jpg", b"a")
    source = store.manifest([{"source-ref": ref, "class": 0}, {"source-ref": ref}])
    channel = manifest_channel(source, ["source-ref", "class"], record_wrapping="RecordIO")
    _fails_with(tmp_path, channel, source, "line 2", "'class'", "no such attribute")


def test_a_missing_object_fails_the_job(tmp_path: Path, store: Store) -> None:
    ref = store.put("a.jpg", b"a")
    missing = store.missing("gone.jpg")
    source = store.manifest([{"source-ref": ref}, {"source-ref": ref}, {"source-ref": missing}])
    channel = manifest_channel(source, ["source-ref"])
    failure = _fails_with(tmp_path, channel, source, "line 3", "'source-ref'", "gone.jpg")
    assert failure.count("gone.jpg") == 1, failure
    assert ("NoSuchKey" if store.bucket else "No such file") in failure


def test_a_line_that_is_not_json_fails_the_job(tmp_path: Path, store: Store) -> None:
    source = store.manifest([{"class": 0}, "{not json", {"class": 1}])
    channel = manifest_channel(source, ["class"])
    _fails_with(tmp_path, channel, source, "line 2", "not JSON", "'class'")


def test_lines_before_a_bad_line_reach_the_script(tmp_path: Path, store: Store) -> None:
    lines = [{"class": "a"}, {"class": "b"}, {"other": 1}]
    channel = manifest_channel(store.manifest(lines), ["class"], record_wrapping="RecordIO")
    want = rec(b"a") + rec(b"b")
    # The script reads what comes before the bad line and saves it, whether the epoch then ends
    # or is held open until the job stops; it outlives the failure's SIGTERM to finish that.
    entry = script(
        tmp_path,
        f"""
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        record("seen.json", read_epoch("train", 0, limit={len(want)}).decode("latin-1"))
        """,
    )
    result = run(tmp_path, entry, [channel], stop_grace=30)
    assert "line 3" in (result.failure or "")
    assert recorded(result.job_dir, "seen.json").encode("latin-1") == want


def _served(tmp_path: Path, text: str, names: list[str], **options: Any) -> bytes:
    """One epoch of a local manifest holding `text`, streamed in this process."""
    from pipemode.runner.manifest import manifest_object, stream_manifest_epoch

    (tmp_path / "m.manifest").write_text(text)
    (tmp_path / "x").write_bytes(b"X")  # the object "x" refers to
    channel = manifest_channel(str(tmp_path / "m.manifest"), names, **options)
    return b"".join(stream_manifest_epoch(manifest_object(channel.source), channel, 0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1, "b-ref": "x"}\n\n[1, 2]\n', r"line 3 is a JSON list, not an object"),
        ('{"a": NaN}\n', r"line 1 is not JSON \(NaN is not JSON\)"),
        ('{"a": "x", "c": [1, -Infinity]}\n', r"line 1 is not JSON \(-Infinity is not JSON\)"),
        ('{"a": "x", "b-ref": 7}\n', r"line 1, attribute 'b-ref': a -ref attribute holds"),
        ('{"a": "\\ud800", "b-ref": "x"}\n', r"line 1, attribute 'a': .* not valid Unicode"),
        ('{"a": "x", "b-ref": "s3://bucket"}\n', r"'s3://bucket' names no bucket and key"),
    ],
)
def test_lines_that_cannot_be_served_are_named(tmp_path: Path, text: str, message: str) -> None:
    from pipemode.runner.manifest import ManifestError

    with pytest.raises(ManifestError, match=message):
        _served(tmp_path, text, ["a", "b-ref"])


def test_values_stream_as_their_text_without_a_runner(tmp_path: Path) -> None:
    text = '{"s": "\\u00e9\\n", "n": 1.0E+2, "o": {"k": [1, {"z": "\\""}]}, "e": ""}\n'
    served = _served(tmp_path, text, ["s", "n", "o", "e"], record_wrapping="RecordIO")
    assert records(served) == ["é\n".encode(), b"1.0E+2", b'{"k":[1,{"z":"\\""}]}', b""]


@pytest.mark.parametrize(
    ("line", "want"),
    [
        # A key given twice: its last value, in a line and in an object (at the key's first place).
        ('{"a": 1, "a": 2}', b"2"),
        ('{"a": {"k": 1, "j": 2, "k": 3}}', b'{"k":3,"j":2}'),
        # Inside an object, strings (keys too) are escaped as JSON needs: quote, backslash and
        # U+0000-U+001F; DEL, U+2028 and the rest as UTF-8; "\/" is "/".
        (
            r'{"a": {"k\u0007": "\t\u0001\u007f\u2028\/\"\\"}}',
            '{"k\\u0007":"\\t\\u0001\x7f\u2028/\\"\\\\"}'.encode(),
        ),
        # A string attribute streams its characters, control characters unescaped.
        (r'{"a": "\t\u0001"}', b"\t\x01"),
    ],
)
def test_duplicate_keys_and_control_characters(tmp_path: Path, line: str, want: bytes) -> None:
    assert _served(tmp_path, line + "\n", ["a"]) == want


@pytest.mark.parametrize("head_bytes", [1 << 20, 100])  # held whole; streamed (size from fstat)
def test_a_wrapped_object_over_the_record_limit_fails_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, head_bytes: int
) -> None:
    from pipemode.runner import manifest

    assert manifest._MAX_RECORD == (1 << 29) - 1  # RecordIO's 29-bit length, as documented
    monkeypatch.setattr(manifest, "_MAX_RECORD", 1000)
    monkeypatch.setattr(manifest, "HEAD_BYTES", head_bytes)
    (tmp_path / "fits").write_bytes(b"f" * 1000)
    (tmp_path / "big").write_bytes(b"b" * 1001)
    fits, big = '{"a-ref": "fits"}\n', '{"a-ref": "big"}\n'
    assert _served(tmp_path, fits, ["a-ref"], record_wrapping="RecordIO") == rec(b"f" * 1000)
    too_big = r"line 2, attribute 'a-ref': 1001 bytes do not fit one RecordIO record \(at most 1000"
    with pytest.raises(manifest.ManifestError, match=too_big):
        _served(tmp_path, fits + big, ["a-ref"], record_wrapping="RecordIO")
    assert _served(tmp_path, fits + big, ["a-ref"]) == b"f" * 1000 + b"b" * 1001  # unwrapped


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attribute_names": None}, "needs AttributeNames"),
        ({"attribute_names": ()}, "needs AttributeNames"),
        ({"attribute_names": tuple(f"a{i}" for i in range(17))}, "1 to 16"),
        ({"attribute_names": ("a",), "input_mode": "File"}, "Pipe mode only"),
        ({"attribute_names": ("a",), "compression": "Gzip"}, "Gzip"),
    ],
)
def test_bad_augmented_manifest_channels_are_refused(options: dict, message: str) -> None:
    with pytest.raises(JobConfigError, match=message):
        Channel("train", "m.manifest", s3_data_type="AugmentedManifestFile", **options)


def test_attribute_names_need_an_augmented_manifest() -> None:
    with pytest.raises(JobConfigError, match="AugmentedManifestFile"):
        Channel("train", "data", attribute_names=("a",))


def test_sixteen_attribute_names_are_streamed(tmp_path: Path) -> None:
    names = [f"a{i}" for i in range(16)]
    source = Store(tmp_path).manifest([{name: i for i, name in enumerate(names)}])
    result = run_epochs(tmp_path, manifest_channel(source, names, record_wrapping="RecordIO"))
    assert result.exit_code == 0, result.failure
    assert records(epoch_bytes(result)) == [str(i).encode() for i in range(16)]


def test_a_missing_manifest_is_refused_before_the_job_starts(tmp_path: Path, store: Store) -> None:
    entry = script(tmp_path, "")
    channel = manifest_channel(store.missing("nothing.manifest"), ["a"])
    if store.bucket is None:
        channel = manifest_channel(str(tmp_path / "nothing.manifest"), ["a"])
    with pytest.raises(JobConfigError, match=r"nothing\.manifest"):
        run(tmp_path, entry, [channel])


def test_the_input_data_config_and_estimator_spell_it_as_sagemaker_does(tmp_path: Path) -> None:
    from pipemode.runner import TrainingInput
    from pipemode.runner.channels import parse_input_data_config

    config = [
        {
            "ChannelName": "train",
            "InputMode": "Pipe",
            "RecordWrapperType": "RecordIO",
            "DataSource": {
                "S3DataSource": {
                    "S3Uri": "s3://b/train.manifest",
                    "S3DataType": "AugmentedManifestFile",
                    "AttributeNames": ["source-ref", "class"],
                }
            },
        }
    ]
    (channel,) = parse_input_data_config(config)
    sdk = TrainingInput(
        "s3://b/train.manifest",
        s3_data_type="AugmentedManifestFile",
        attribute_names=["source-ref", "class"],
        record_wrapping="RecordIO",
    ).channel("train", "Pipe")
    assert channel == sdk
    assert channel.attribute_names == ("source-ref", "class")
    assert channel.s3_data_type == "AugmentedManifestFile"


# -- size: big objects and long manifests stream in bounded memory --------------------------


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def _warm_up(tmp_path: Path, store: Store, wrapping: str) -> None:
    """Runs a small job like the measured one first, so that what is made once per process
    (boto3 clients and their service models, imports) is not counted as the run's memory."""
    ref = store.put("warm-up.bin", os.urandom(2 << 20))  # above HEAD_BYTES: a size lookup too
    channel = manifest_channel(
        store.manifest([{"image-ref": ref, "label": 1}], "warm-up.manifest"),
        ["image-ref", "label"],
        record_wrapping=wrapping,
    )
    (tmp_path / "warm-up").mkdir()
    assert run_epochs(tmp_path / "warm-up", channel).exit_code == 0


def _peak_memory(action: Callable[[], Any]) -> tuple[Any, int]:
    """What `action` returns, and how far this process's peak resident memory (where the
    runner's feeders run; the scripts and the S3 server are other processes) rose above what
    it was when `action` started."""
    # Memory freed earlier and kept by malloc would be reused unseen: hand it back first, and
    # keep large blocks in mappings of their own (glibc raises its mmap threshold to the size of
    # a large block once one is freed, after which such blocks come from the reusable heap).
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, 128 << 10)
    libc.malloc_trim(0)
    clear_refs = Path("/proc/self/clear_refs")
    clear_refs.write_text("5")  # resets VmHWM, the peak, to the current resident size
    before = _status_kib("VmHWM")
    result = action()
    return result, (_status_kib("VmHWM") - before) << 10


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


@pytest.mark.parametrize("wrapping", ["RecordIO", "None"])
def test_a_20_mb_object_streams_without_being_held_whole(
    tmp_path: Path, store: Store, wrapping: str
) -> None:
    big = os.urandom(20 << 20)
    source = store.manifest([{"image-ref": store.put("big.bin", big), "label": 3}])
    channel = manifest_channel(source, ["image-ref", "label"], record_wrapping=wrapping)
    _warm_up(tmp_path, store, wrapping)
    result, peak = _peak_memory(lambda: run_epochs(tmp_path, channel, environment={"DIGEST": "1"}))
    assert result.exit_code == 0, result.failure
    want = rec(big) + rec(b"3") if wrapping == "RecordIO" else big + b"3"
    assert recorded(result.job_dir, "epoch0.json") == [len(want), hashlib.sha256(want).hexdigest()]
    assert peak < 10 << 20, peak  # the object is 20 MiB; what is held at once, far less


PADDING = "p" * 200  # makes each line's text worth holding (25 MB in all), were it held


@pytest.mark.slow
def test_a_100000_line_manifest_streams_in_flat_memory(tmp_path: Path, store: Store) -> None:
    # On S3 the lines refer to no objects (100,000 GETs would test the server, not the runner).
    objects = [b"x" * (i + 1) for i in range(4)] if store.bucket is None else []
    refs = [store.put(f"o/{i}", data) for i, data in enumerate(objects)]
    names = ["source-ref", "label", "id"] if refs else ["label", "id"]

    def line(index: int) -> dict[str, Any]:
        values = {"label": index % 7, "id": f"line-{index:07d}-{PADDING}"}
        return {"source-ref": refs[index % 4], **values} if refs else values

    # Written line by line: lines built in memory here would leave freed memory behind for
    # the runner to reuse, unseen by the measure of its peak.
    written = store.root / "long.manifest"
    with written.open("w") as out:
        for index in range(100_000):
            out.write(json.dumps(line(index)) + "\n")
    source = store.manifest_from(written)
    channel = manifest_channel(source, names, record_wrapping="RecordIO")
    _warm_up(tmp_path, store, "RecordIO")
    result, peak = _peak_memory(lambda: run_epochs(tmp_path, channel, environment={"DIGEST": "1"}))
    assert result.exit_code == 0, result.failure
    want = hashlib.sha256()
    for index in range(100_000):
        if refs:
            want.update(rec(objects[index % 4]))
        want.update(rec(b"%d" % (index % 7)) + rec(f"line-{index:07d}-{PADDING}".encode()))
    assert recorded(result.job_dir, "epoch0.json")[1] == want.hexdigest()
    # The index costs 24 bytes a line (2.4 MB, twice that while its arrays grow); the lines'
    # values held would cost 25 MB (S3, text only) to 100 MB (local, with objects).
    assert peak < 10 << 20, peak


def test_a_reader_that_closes_early_gets_the_next_epoch_whole(tmp_path: Path, store: Store) -> None:
    big = os.urandom(3 << 20)  # larger than what is fetched ahead: a stream left open
    lines = [{"a-ref": store.put(f"o{i}", big), "n": i} for i in range(12)]
    channel = manifest_channel(store.manifest(lines), ["a-ref", "n"], record_wrapping="RecordIO")
    entry = script(
        tmp_path,
        """
        import hashlib
        first = read_epoch("train", 0, limit=100)  # closes the FIFO after 100 bytes
        second = read_epoch("train", 1)
        record("seen.json", [len(first), len(second), hashlib.sha256(second).hexdigest()])
        """,
    )
    result = run(tmp_path, entry, [channel])
    assert result.exit_code == 0, result.failure
    want = b"".join(rec(big) + rec(b"%d" % i) for i in range(12))
    assert recorded(result.job_dir, "seen.json") == [
        100,
        len(want),
        hashlib.sha256(want).hexdigest(),
    ]


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_a_local_manifest_may_refer_to_s3_and_an_s3_one_not_to_local_paths(
    tmp_path: Path, store: Store
) -> None:
    ref = store.put("img.jpg", b"jpeg bytes")
    for job in ("a", "b"):
        (tmp_path / job).mkdir()
    local = tmp_path / "local.manifest"
    local.write_text(json.dumps({"source-ref": ref}) + "\n")
    result = run_epochs(tmp_path / "a", manifest_channel(str(local), ["source-ref"]))
    assert result.exit_code == 0, result.failure
    assert epoch_bytes(result) == b"jpeg bytes"
    remote = store.manifest([{"source-ref": "images/img.jpg"}])
    failure = _fails_with(tmp_path / "b", manifest_channel(remote, ["source-ref"]), remote)
    assert "line 1, attribute 'source-ref'" in failure and "local manifests only" in failure
