"""PyTorch input pipelines on the tutorial's 8 KB records (facts §6), side by side in one run:

1. Dense batches through a FIFO fed by `cat`: `DataLoader(pipemode.torch.PipeModeDataset(
   features=..., batch_size=64), batch_size=None)` against `pipemode.DenseReader` alone on the
   same FIFO (batch_size=64, numpy batches), which is the floor the torch layer adds to; the
   dataset iterated without DataLoader, which splits the torch layer's cost from DataLoader's
   own; and the same DataLoader with one worker, whose batches cross to the main process in
   shared memory.
2. What a PyTorch user would pick today for TFRecord files: the `tfrecord` package's
   `TFRecordDataset` on a regular file, parsed to the same `float64[64, 1024]` and `int64[64]`
   batches by `DataLoader(batch_size=64)`, against the DataLoader of 1. on the FIFO.
3. A CPU-heavy per-record transform (parse the Example, then zlib level 9 on the record, about
   as costly as decoding a small JPEG) on raw records: `DataLoader(PipeModeDataset(transform=...,
   batch_size=64), batch_size=64)` with 2 workers against 0; and for reference torch alone, the
   same transform over records held in memory and split by position across the workers, the
   best workers can do when the source can be replicated.

Each contender runs `--rounds` times, interleaved with the others; its best wall time counts, and
beside it its best CPU time per record (this process, the `cat` writer and DataLoader's workers),
which moves less when other work shares the cores.

    pip install tfrecord   # the package of 2.; its row is left out without it
    python benches/bench_torch.py [--records 20000] [--transform-records 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import resource
import subprocess
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pipemode import DenseReader, FixedLenFeature, RecordReader, RecordWriter, decode_examples
from pipemode.generate import generate
from pipemode.torch import PipeModeDataset
from torch.utils.data import DataLoader

FEATURES = {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")}
DECODE_RAW = {"data": "float64"}
BATCH = 64


@contextlib.contextmanager
def served_channel(source: Path) -> Iterator[dict[str, str]]:
    """A job folder whose channel `train` serves `source` as epoch 0, through a FIFO fed by
    `cat`; yields the folder arguments of PipeModeDataset (the FIFO is `pipe_dir/train_0`)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "config").mkdir()
        config = {"train": {"TrainingInputMode": "Pipe"}}
        (root / "config" / "inputdataconfig.json").write_text(json.dumps(config))
        fifo = root / "train_0"
        os.mkfifo(fifo)
        writer = subprocess.Popen(["sh", "-c", 'exec cat "$0" > "$1"', str(source), str(fifo)])
        try:
            yield {
                "pipe_dir": folder,
                "state_dir": f"{folder}/state",
                "config_dir": f"{folder}/config",
            }
        finally:
            writer.kill()
            writer.wait()


def dense_reader_alone(source: Path) -> int:
    with served_channel(source) as dirs:
        fifo = Path(dirs["pipe_dir"]) / "train_0"
        with DenseReader(fifo, features=FEATURES, decode_raw=DECODE_RAW, batch_size=BATCH) as r:
            return sum(len(batch["labels"]) for batch in r)


def dataset_alone(source: Path) -> int:
    """PipeModeDataset iterated directly: the torch layer without DataLoader's own work."""
    with served_channel(source) as dirs:
        dataset = PipeModeDataset(
            "train", features=FEATURES, decode_raw=DECODE_RAW, batch_size=BATCH, **dirs
        )
        return sum(len(batch["labels"]) for batch in dataset)


def dataloader_dense(workers: int) -> Callable[[Path], int]:
    def consume(source: Path) -> int:
        with served_channel(source) as dirs:
            dataset = PipeModeDataset(
                "train", features=FEATURES, decode_raw=DECODE_RAW, batch_size=BATCH, **dirs
            )
            loader = DataLoader(dataset, batch_size=None, num_workers=workers)
            return sum(len(batch["labels"]) for batch in loader)

    return consume


def tfrecord_package(source: Path) -> int:
    from tfrecord.torch.dataset import TFRecordDataset

    def to_arrays(features: dict[str, Any]) -> dict[str, Any]:
        return {"data": np.frombuffer(features["data"], "<f8"), "labels": features["labels"][0]}

    dataset = TFRecordDataset(
        str(source), None, {"data": "byte", "labels": "int"}, transform=to_arrays
    )
    rows = 0
    for batch in DataLoader(dataset, batch_size=BATCH):
        assert batch["data"].shape[1:] == (1024,) and batch["data"].dtype == torch.float64
        rows += len(batch["labels"])
    return rows


def heavy_transform(record: bytes) -> torch.Tensor:
    example = decode_examples([record], FEATURES, DECODE_RAW)
    zlib.compress(record, 9)
    return torch.from_numpy(example["data"][0])


class InMemoryRecords(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
    """Records already in memory, split by position across DataLoader's workers (as webdataset
    splits its shards): torch's own cost of workers, with a source that can be replicated."""

    def __init__(self, records: list[bytes]) -> None:
        self.records = records

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        # Runs of BATCH records per worker, in turn, so batches are whole and in order.
        for start in range(worker * BATCH, len(self.records), workers * BATCH):
            yield from map(heavy_transform, self.records[start : start + BATCH])


def in_memory_transform(workers: int) -> Callable[[Path], int]:
    def consume(source: Path) -> int:
        loader = DataLoader(InMemoryRecords(list(RecordReader(source))), BATCH, num_workers=workers)
        return sum(len(batch) for batch in loader)

    return consume


def dataloader_transform(workers: int) -> Callable[[Path], int]:
    def consume(source: Path) -> int:
        with served_channel(source) as dirs:
            dataset = PipeModeDataset("train", transform=heavy_transform, batch_size=BATCH, **dirs)
            loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers)
            return sum(len(batch) for batch in loader)

    return consume


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the `cat` writer and
    DataLoader's workers): steadier than wall time on shared cores."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_of(
    contenders: dict[str, tuple[Callable[[Path], int], Path]], count: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Each contender's best wall time and best CPU time (seconds), over interleaved rounds."""
    best = dict.fromkeys(contenders, (float("inf"), float("inf")))
    for _ in range(rounds):
        for name, (consume, source) in contenders.items():
            start, cpu = time.perf_counter(), cpu_seconds()
            rows = consume(source)
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
            assert rows == count, (name, rows)
            best[name] = (min(best[name][0], seconds), min(best[name][1], cpu))
    return best


def report(
    title: str, best: dict[str, tuple[float, float]], count: int, size: int, against: str
) -> None:
    print(f"\n{title}")
    print(f"{'':58} {'records/s':>10} {'MB/s':>7} {'ratio':>7} {'CPU us/rec':>10}")
    for name, (seconds, cpu) in best.items():
        ratio = best[against][0] / seconds
        line = f"{name:58} {count / seconds:10,.0f} {size / seconds / 1e6:7,.0f} {ratio:6.2f}x"
        print(f"{line} {cpu / count * 1e6:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000, help="records per pass")
    parser.add_argument("--transform-records", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the pipelines, not torch's kernels, are measured
    # The tfrecord contender's arrays view its bytes, read-only; torch says so once.
    warnings.filterwarnings("ignore", "The given NumPy array is not writable")

    with tempfile.TemporaryDirectory() as folder:
        recordio = generate(Path(folder) / "rio", args.records).files[0]
        tfrecord = generate(Path(folder) / "tfr", args.records, record_format="TFRecord").files[0]
        size = recordio.stat().st_size
        print(f"{args.records} tutorial records ({size / 1e6:.0f} MB), batches of {BATCH}, ")
        print(f"torch {torch.__version__}, best of {args.rounds}, load {os.getloadavg()[0]:.1f}")

        tfr = "tfrecord.torch.TFRecordDataset + DataLoader (regular file)"
        pipemode_loader = "DataLoader(PipeModeDataset(features=...)) (FIFO)"
        dense = {
            "DenseReader alone (FIFO)": (dense_reader_alone, recordio),
            "PipeModeDataset(features=...) iterated directly (FIFO)": (dataset_alone, recordio),
            pipemode_loader: (dataloader_dense(0), recordio),
            "  the same, num_workers=1": (dataloader_dense(1), recordio),
            tfr: (tfrecord_package, tfrecord),
        }
        if importlib.util.find_spec("tfrecord") is None:
            print("the tfrecord package is not installed (pip install tfrecord): no row for it")
            del dense[tfr]
        best = best_of(dense, args.records, args.rounds)
        report("Dense batches", best, args.records, size, "DenseReader alone (FIFO)")
        if tfr in best:
            speedup = best[tfr][0] / best[pipemode_loader][0]
            print(f"PipeModeDataset against the tfrecord package: {speedup:.1f}x")

        count = args.transform_records
        few = Path(folder) / "few.rec"
        with RecordWriter(few, "RecordIO") as writer:
            for record in itertools.islice(RecordReader(recordio), count):
                writer.write(record)
        heavy = {
            "per-record transform, num_workers=0": (dataloader_transform(0), few),
            "per-record transform, num_workers=2": (dataloader_transform(2), few),
            "torch alone, records in memory, num_workers=0": (in_memory_transform(0), few),
            "torch alone, records in memory, num_workers=2": (in_memory_transform(2), few),
        }
        best = best_of(heavy, count, args.rounds)
        report(
            "A CPU-heavy per-record transform (raw records)",
            best,
            count,
            few.stat().st_size,
            "per-record transform, num_workers=0",
        )


if __name__ == "__main__":
    main()
