"""pipemode.torch.PipeModeDataset under DataLoader, on FIFOs served by the runner's feeder."""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipemode import (
    CorruptRecordError,
    FixedLenFeature,
    PipeModeDatasetException,
    RecordWriter,
    decode_examples,
    encode_example,
)
from pipemode.runner import Channel
from pipemode.runner.feeder import ChannelFeeder
from pipemode.runner.sources import resolve

torch = pytest.importorskip("torch")
import pipemode.torch  # noqa: E402  (needs torch)
from pipemode.torch import PipeModeDataset  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

pytestmark = pytest.mark.torch

FEATURES = {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")}
DECODE_RAW = {"data": "float32"}


class ServedJob:
    """A job folder whose Pipe channels the runner's feeder serves, epoch after epoch."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pipe_dir = root / "data"
        self.config_dir = root / "config"
        self.state_dir = root / "state"
        self.pipe_dir.mkdir()
        self.config_dir.mkdir()
        self.feeders: list[ChannelFeeder] = []
        self.config: dict[str, dict[str, str]] = {}

    def serve(self, name: str, files: dict[str, bytes] | list[list[bytes]]) -> None:
        """Serves `files` (raw contents, or lists of records written as RecordIO)."""
        source = self.root / f"source-{name}"
        source.mkdir()
        contents = files if isinstance(files, dict) else _recordio_files(files)
        for file_name, data in contents.items():
            (source / file_name).write_bytes(data)
        channel = Channel(name, str(source))
        self.config[name] = {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated"}
        (self.config_dir / "inputdataconfig.json").write_text(json.dumps(self.config))
        feeder = ChannelFeeder(channel, resolve(channel), self.pipe_dir, "algo-1")
        self.feeders.append(feeder)
        feeder.start()

    def dirs(self) -> dict[str, str]:
        return {
            "state_dir": str(self.state_dir),
            "pipe_dir": str(self.pipe_dir),
            "config_dir": str(self.config_dir),
        }

    def next_epoch(self, channel: str) -> int:
        return int((self.state_dir / f".{channel}-pipe_mode-state").read_text())

    def stop(self) -> None:
        for feeder in self.feeders:
            feeder.stop()
        for feeder in self.feeders:
            assert feeder.join(10), "a feeder did not stop"


def _recordio_files(files: list[list[bytes]]) -> dict[str, bytes]:
    contents = {}
    for index, records in enumerate(files):
        contents[f"part-{index}.rec"] = recordio_bytes(records)
    return contents


def recordio_bytes(records: list[bytes]) -> bytes:
    # Written by pipemode's own writer into a regular file, read back as the file's bytes.
    with tempfile.NamedTemporaryFile() as file:
        with RecordWriter(file.name, "RecordIO") as writer:
            for record in records:
                writer.write(record)
        return Path(file.name).read_bytes()


@pytest.fixture
def job(tmp_path: Path) -> Iterator[ServedJob]:
    served = ServedJob(tmp_path)
    yield served
    served.stop()


def some_records(count: int) -> list[bytes]:
    return [f"record {i} ".encode() * (1 + i % 5) for i in range(count)]


def examples(count: int) -> list[bytes]:
    rng = np.random.default_rng(count)
    return [
        encode_example({"data": rng.random(8, dtype=np.float32).tobytes(), "labels": [i]})
        for i in range(count)
    ]


def batches_as_numpy(batches: list[dict[str, Any]]) -> list[dict[str, np.ndarray]]:
    return [{name: np.asarray(column) for name, column in batch.items()} for batch in batches]


def assert_same_batches(ours: list[dict[str, Any]], records: list[bytes], size: int) -> None:
    expected = [
        decode_examples(records[start : start + size], FEATURES, DECODE_RAW)
        for start in range(0, len(records), size)
    ]
    assert [len(b["labels"]) for b in ours] == [len(b["labels"]) for b in expected]
    for mine, theirs in zip(batches_as_numpy(ours), expected):
        for name in theirs:
            np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)


# Raw records.


def test_raw_records_epoch_after_epoch_in_order(job: ServedJob) -> None:
    records = some_records(3000)
    job.serve("train", [records[:1000], records[1000:]])
    dataset = PipeModeDataset("train", **job.dirs())
    for epoch in range(3):
        assert list(dataset) == records
        assert job.next_epoch("train") == epoch + 1


def test_transform_is_applied_to_each_record(job: ServedJob) -> None:
    job.serve("train", [[b"ab", b"", b"cde"]])
    dataset = PipeModeDataset("train", transform=len, **job.dirs())
    assert list(dataset) == [2, 0, 3]


def test_an_iterator_made_and_dropped_consumes_nothing(job: ServedJob) -> None:
    job.serve("train", [[b"first"]])
    loader = DataLoader(PipeModeDataset("train", **job.dirs()), batch_size=None)
    for _ in range(3):
        iterator = iter(loader)
        del iterator
    assert job.next_epoch("train") == 0
    assert list(loader) == [b"first"]
    assert job.next_epoch("train") == 1


# Dense batches of decoded Examples.


def test_dense_batches_equal_the_decoder_and_share_its_buffers(
    job: ServedJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = examples(300)
    job.serve("train", [records])
    decoded: list[dict[str, np.ndarray]] = []
    to_tensors = pipemode.torch.to_tensors

    def keeping_the_decoders_arrays(batch: dict[str, np.ndarray]) -> dict[str, Any]:
        decoded.append(batch)
        return to_tensors(batch)

    monkeypatch.setattr(pipemode.torch, "to_tensors", keeping_the_decoders_arrays)
    dataset = PipeModeDataset(
        "train", features=FEATURES, decode_raw=DECODE_RAW, batch_size=64, **job.dirs()
    )
    batches = list(DataLoader(dataset, batch_size=None))
    assert_same_batches(batches, records, 64)
    for batch, arrays in zip(batches, decoded):
        assert isinstance(batch["data"], torch.Tensor)
        assert batch["data"].dtype == torch.float32 and batch["labels"].dtype == torch.int64
        for name in ("data", "labels"):
            assert np.shares_memory(batch[name].numpy(), arrays[name]), name


def test_to_tensors_does_not_copy_and_keeps_strings_as_numpy() -> None:
    data = np.arange(12, dtype=np.float64).reshape(3, 4)
    strings = np.array([b"a", b"bc", b""], dtype=object)
    tensors = pipemode.torch.to_tensors({"data": data, "tag": strings})
    tensors["data"][0, 0] = 100.0
    assert data[0, 0] == 100.0
    assert tensors["tag"] is strings


def test_a_transform_gets_each_dense_batch(job: ServedJob) -> None:
    job.serve("train", [examples(100)])
    dataset = PipeModeDataset(
        "train",
        features=FEATURES,
        decode_raw=DECODE_RAW,
        batch_size=30,
        transform=lambda batch: int(batch["labels"].sum()),
        **job.dirs(),
    )
    assert list(dataset) == [sum(range(s, min(s + 30, 100))) for s in range(0, 100, 30)]


# DataLoader's workers.


@pytest.mark.parametrize("persistent", [False, True])
def test_one_worker_reads_each_epoch_once_in_order(job: ServedJob, persistent: bool) -> None:
    records = examples(500)
    job.serve("train", [records[:200], records[200:]])
    dataset = PipeModeDataset(
        "train", features=FEATURES, decode_raw=DECODE_RAW, batch_size=32, **job.dirs()
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=1, persistent_workers=persistent)
    for epoch in range(3):
        assert_same_batches(list(loader), records, 32)
        assert job.next_epoch("train") == epoch + 1


def test_one_worker_batches_raw_records(job: ServedJob) -> None:
    records = some_records(1000)
    job.serve("train", [records])
    dataset = PipeModeDataset("train", transform=len, **job.dirs())
    loader = DataLoader(dataset, batch_size=64, num_workers=1)
    for _ in range(2):
        lengths = torch.cat(list(loader)).tolist()
        assert lengths == [len(r) for r in records]


# Errors.


def truncated_channel(records: list[bytes]) -> tuple[dict[str, bytes], int]:
    """A channel whose second file ends mid-record; and the byte offset of that record."""
    good, bad = recordio_bytes(records[:100]), recordio_bytes(records[100:])
    start = len(recordio_bytes(records[100:150]))
    return {"part-0.rec": good, "part-1.rec": bad[: start + 12]}, len(good) + start


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_corrupt_data_raises_the_readers_error_in_the_loop(
    job: ServedJob, num_workers: int
) -> None:
    files, offset = truncated_channel(some_records(200))
    job.serve("train", files)
    dataset = PipeModeDataset("train", batch_size=1, **job.dirs())
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    seen = []
    with pytest.raises(CorruptRecordError) as raised:
        for record in loader:
            seen.append(record)
    assert seen == some_records(150)
    message = str(raised.value)
    assert "channel 'train' epoch 0" in message
    assert f"byte offset {offset}" in message


def test_construction_checks_the_channel_and_options(job: ServedJob) -> None:
    job.serve("train", [[b"x"]])
    with pytest.raises(PipeModeDatasetException, match="Channel eval not found"):
        PipeModeDataset("eval", **job.dirs())
    with pytest.raises(PipeModeDatasetException, match="decode_raw= needs features="):
        PipeModeDataset("train", decode_raw=DECODE_RAW, **job.dirs())
    with pytest.raises(PipeModeDatasetException, match="VarLenFeature"):
        PipeModeDataset("train", features={"x": _VarLenFeature()}, **job.dirs())
    assert job.next_epoch("train") == 0


# Augmented manifests: one record per attribute, grouped back into lines.

NAMES = ["source-ref", "class"]


def manifest_records(lines: int) -> list[bytes]:
    images = [f"image {i} ".encode() * (1 + i % 7) for i in range(lines)]
    return [r for i, image in enumerate(images) for r in (image, b"%d" % (i % 3))]


def as_lines(records: list[bytes]) -> list[dict[str, bytes]]:
    return [dict(zip(NAMES, records[i : i + 2])) for i in range(0, len(records), 2)]


@pytest.mark.parametrize("workers", [0, 2])
def test_attribute_names_yield_each_line_whole(job: ServedJob, workers: int) -> None:
    records = manifest_records(501)
    job.serve("train", [records[:301], records[301:]])  # a line split across two objects
    # One line per item, so runs of one line (DataLoader takes an item from each worker in turn).
    dataset = PipeModeDataset("train", attribute_names=NAMES, batch_size=1, **job.dirs())
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    for epoch in range(2):
        assert list(loader) == as_lines(records)
        assert job.next_epoch("train") == epoch + 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_partial_manifest_line_is_an_error_not_a_misaligned_line(
    job: ServedJob, workers: int
) -> None:
    records = manifest_records(40)[:-1]  # the last line lacks its class
    job.serve("train", [records])
    dataset = PipeModeDataset("train", attribute_names=NAMES, batch_size=1, **job.dirs())
    seen: list[dict[str, bytes]] = []
    with pytest.raises(
        CorruptRecordError, match=r"channel 'train' epoch 0: .*do not make whole lines"
    ):
        for line in DataLoader(dataset, batch_size=None, num_workers=workers):
            seen.append(line)
    assert seen == as_lines(records[:-1])


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unwrapped_manifest_stream_says_attribute_names_need_recordio(
    job: ServedJob, workers: int
) -> None:
    job.serve("train", {"values": b"".join(manifest_records(4))})  # no RecordIO framing
    dataset = PipeModeDataset("train", attribute_names=NAMES, batch_size=1, **job.dirs())
    with pytest.raises(
        CorruptRecordError, match=r"bad magic .*needs the channel's RecordWrapperType: RecordIO"
    ):
        list(DataLoader(dataset, batch_size=None, num_workers=workers))


def test_attribute_names_do_not_go_with_features(job: ServedJob) -> None:
    job.serve("train", [[b"x"]])
    with pytest.raises(PipeModeDatasetException, match="attribute_names= and features="):
        PipeModeDataset("train", attribute_names=NAMES, features=FEATURES, **job.dirs())


class _VarLenFeature:
    dtype = "int64"


@pytest.mark.parametrize("persistent", [False, True])
def test_two_workers_deal_raw_records_in_order(job: ServedJob, persistent: bool) -> None:
    records = some_records(3000)
    job.serve("train", [records[:1000], records[1000:]])
    dataset = PipeModeDataset("train", transform=len, batch_size=64, **job.dirs())
    loader = DataLoader(dataset, batch_size=64, num_workers=2, persistent_workers=persistent)
    for epoch in range(3):
        assert torch.cat(list(loader)).tolist() == [len(r) for r in records]
        assert job.next_epoch("train") == epoch + 1


@pytest.mark.parametrize("persistent", [False, True])
def test_two_workers_deal_dense_batches_in_order(job: ServedJob, persistent: bool) -> None:
    records = examples(700)
    job.serve("train", [records])
    dataset = PipeModeDataset(
        "train", features=FEATURES, decode_raw=DECODE_RAW, batch_size=50, **job.dirs()
    )
    loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=persistent)
    for epoch in range(2):
        assert_same_batches(list(loader), records, 50)
        assert job.next_epoch("train") == epoch + 1


def test_runs_of_another_size_still_yield_each_record_once(job: ServedJob) -> None:
    records = some_records(1000)
    job.serve("train", [records])
    dataset = PipeModeDataset("train", batch_size=7, **job.dirs())
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    got = list(loader)
    assert sorted(got) == sorted(records)
    assert got != records  # runs of 7 dealt to 2 workers, taken one record at a time


def test_transforms_run_in_every_worker(job: ServedJob) -> None:
    job.serve("train", [some_records(400)])
    dataset = PipeModeDataset("train", transform=lambda r: os.getpid(), batch_size=1, **job.dirs())
    pids = list(DataLoader(dataset, batch_size=None, num_workers=2))
    assert len(pids) == 400 and len(set(pids)) == 2 and os.getpid() not in pids
    assert pids[0::2] == [pids[0]] * 200 and pids[1::2] == [pids[1]] * 200


# Several local ranks (torchrun) on one host's FIFOs.


def test_several_local_ranks_must_say_how_they_share_a_channel(
    job: ServedJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    job.serve("train", [[b"x"]])
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(PipeModeDatasetException, match=r"2 local ranks .* local_ranks='deal'"):
        PipeModeDataset("train", **job.dirs())
    with pytest.raises(PipeModeDatasetException, match="local_ranks must be one of"):
        PipeModeDataset("train", local_ranks="all", **job.dirs())
    assert job.next_epoch("train") == 0


def test_distributed_ranks_without_local_sizes_are_refused(
    job: ServedJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    job.serve("train", [[b"x"]])
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(pipemode.torch, "_distributed_world_size", lambda: 4)
    with pytest.raises(PipeModeDatasetException, match="LOCAL_WORLD_SIZE and LOCAL_RANK"):
        PipeModeDataset("train", **job.dirs())


def in_local_rank(rank: int, ranks: int, work: Any) -> Any:
    """Runs `work()` in a forked process as torchrun's local rank `rank` of `ranks`."""
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()

    def child() -> None:
        os.environ.update(LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(ranks))
        try:
            results.put(("ok", work()))
        except Exception as error:
            results.put(("error", f"{type(error).__name__}: {error}"))

    process = context.Process(target=child)
    process.start()
    return process, results


def test_a_channel_owned_by_one_rank_is_refused_to_another(
    job: ServedJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    job.serve("eval", [[b"x", b"y"]])
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    PipeModeDataset("eval", local_ranks="own", **job.dirs())
    owned = PipeModeDataset("eval", local_ranks="own", **job.dirs())  # made again: still ours
    process, results = in_local_rank(
        1, 2, lambda: PipeModeDataset("eval", local_ranks="own", **job.dirs())
    )
    process.join(60)
    kind, message = results.get()
    assert kind == "error"
    assert "already read by another process on this host (local rank 0" in message
    assert list(DataLoader(owned, batch_size=None, num_workers=2)) == [b"x", b"y"]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_local_rank_zero_deals_runs_to_every_local_rank(
    job: ServedJob, monkeypatch: pytest.MonkeyPatch, num_workers: int
) -> None:
    records = some_records(1000)
    job.serve("train", [records])
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")

    def read_two_epochs() -> list[list[bytes]]:
        dataset = PipeModeDataset("train", local_ranks="deal", batch_size=10, **job.dirs())
        loader = DataLoader(dataset, batch_size=10, num_workers=num_workers, collate_fn=list)
        return [[r for batch in loader for r in batch] for _ in range(2)]

    ranks = [in_local_rank(rank, 2, read_two_epochs) for rank in range(2)]
    got = []
    for process, results in ranks:
        process.join(120)
        kind, epochs = results.get()
        assert kind == "ok", epochs
        got.append(epochs)
    runs = [records[start : start + 10] for start in range(0, 1000, 10)]
    for rank in range(2):
        expected = [r for run in runs[rank::2] for r in run]
        assert got[rank] == [expected, expected]
    assert job.next_epoch("train") == 2


def _die_on_boom(record: bytes) -> bytes:
    if record == b"boom":
        os._exit(3)  # a worker killed mid-epoch, as by the OOM killer
    return record


@pytest.mark.parametrize("seat", [0, 1])
def test_a_worker_that_dies_fails_the_loop_and_hangs_nothing(job: ServedJob, seat: int) -> None:
    # Record 40 + seat is in a run dealt to worker `seat` (runs of 10, two workers).
    records = [b"boom" if i == 40 + seat * 10 else b"r%d" % i for i in range(300)]
    job.serve("train", [records])
    dataset = PipeModeDataset("train", transform=_die_on_boom, batch_size=10, **job.dirs())
    loader = DataLoader(dataset, batch_size=10, num_workers=2, collate_fn=list, timeout=60)
    seen = []
    with pytest.raises(RuntimeError, match=r"DataLoader worker .* exited unexpectedly"):
        for batch in loader:
            seen.extend(batch)
    # In order up to the death, which torch may report as soon as it happens.
    assert seen == records[: len(seen)] and len(seen) <= 40 + seat * 10


@pytest.mark.parametrize("persistent", [False, True])
def test_a_pass_left_early_leaves_the_next_pass_whole(job: ServedJob, persistent: bool) -> None:
    records = some_records(3000)
    job.serve("train", [records])
    dataset = PipeModeDataset("train", batch_size=1, **job.dirs())
    loader = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=persistent)
    iterator = iter(loader)
    assert [next(iterator) for _ in range(5)] == records[:5]
    del iterator  # its workers' dealer stops mid-epoch and closes the FIFO
    assert list(loader) == records
    assert job.next_epoch("train") == 2
