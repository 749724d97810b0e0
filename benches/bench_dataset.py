"""PipeModeDataset throughput against its peers, side by side in one run.

    python benches/bench_dataset.py [--records 12000] [--passes 16] [--rounds 3] [--memory]

The tutorial's 8 KB records (a tf.train.Example of 1024 float64 and a label) stream through a
real FIFO fed by `cat`, as SageMaker's agent feeds one. Every row reads the same records:

  fifo copy, ... pipe   cat fifo > /dev/null, as it is and through a 1 MiB pipe (fifo_copy.py);
                        the faster of the two is the FIFO copy limit
  from_generator floor  PipeModeDataset's own TF pipeline fed pre-made batches, no I/O
  raw .batch(1024)      PipeModeDataset records counted in batches of 1024
  tutorial (FIFO)       PipeModeDataset + map(parse_single_example) + batch(64), as the tutorial
  tutorial (file)       the same pipeline on tf.data.TFRecordDataset over a regular file
  dense (FIFO)          PipeModeDataset(features=..., decode_raw=..., batch_size=64)
  TF best (file)        TFRecordDataset + batch(64) + parse_example + decode_raw, regular file
  incumbent ...         sagemaker_tensorflow on the same FIFO, when its venv exists

`--memory` also streams 400 MB and 4 GB through the raw and dense paths in child processes and
reports their peak RSS, which must not grow with the stream.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from fifo_copy import READER_PIPE_SIZE, cat_to_devnull
from pipemode import PipeModeDataset, RecordReader
from pipemode.tensorflow import (
    RAW_BATCH_BYTES,
    RAW_BATCH_RECORDS,
    raw_batch_tensor,
    records_from_batches,
)

DIMENSION = 1024
FEATURES = {
    "data": tf.io.FixedLenFeature([], tf.string),
    "labels": tf.io.FixedLenFeature([], tf.int64),
}
# sagemaker_tensorflow needs Python 3.10 and tensorflow-cpu 2.14: it runs from its own venv.
INCUMBENT_PYTHON = os.environ.get("PIPEMODE_INCUMBENT_PYTHON")


def tutorial_examples(count: int, classes: int = 2) -> list[bytes]:
    """The tutorial's records (facts §6): record i has class i % classes, mean int(c - k/2)."""
    rng = np.random.default_rng(0)
    examples = []
    for i in range(count):
        label = i % classes
        data = rng.normal(int(label - classes / 2), 1.0, DIMENSION)
        feature = {
            "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data.tobytes()])),
            "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        }
        examples.append(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    return examples


def recordio(records: list[bytes]) -> bytes:
    return b"".join(
        struct.pack("<II", 0xCED7230A, len(r)) + r + b"\0" * (-len(r) % 4) for r in records
    )


class Job:
    """A Pipe Mode job folder whose channel serves `stream` as epoch after epoch."""

    def __init__(self, root: Path, stream: Path, passes: int) -> None:
        self.root = root
        self.stream = stream
        self.passes = passes
        (root / "config").mkdir()
        channels = {name: {"TrainingInputMode": "Pipe"} for name in ("train", "incumbent")}
        (root / "config" / "inputdataconfig.json").write_text(json.dumps(channels))
        self.epochs = {"train": 0, "incumbent": 0, "copy": 0}
        self.writers: list[subprocess.Popen[bytes]] = []

    def dirs(self, channel: str = "train") -> dict[str, str]:
        return {
            "state_dir": str(self.root / f"state-{channel}"),
            "pipe_dir": str(self.root),
            "config_dir": str(self.root / "config"),
        }

    def serve_next_epoch(self, channel: str = "train", repeats: int | None = None) -> Path:
        """Makes `<channel>_<n>` and starts a `cat` writer on it, as SageMaker's agent would.

        The writer sends the stream `repeats` times (default: `passes`), so that rows run long
        enough for set-up costs (tracing, opening) not to count.
        """
        repeats = repeats or self.passes
        fifo = self.root / f"{channel}_{self.epochs[channel]}"
        self.epochs[channel] += 1
        os.mkfifo(fifo)
        sources = " ".join([f'"{self.stream}"'] * repeats)
        self.writers.append(subprocess.Popen(["sh", "-c", f'exec cat {sources} > "{fifo}"']))
        return fifo

    def close(self) -> None:
        for writer in self.writers:
            writer.kill()
            writer.wait()


# Iterators that have delivered their last element, released once their row's clock has stopped:
# TF sometimes takes 0.05-0.45 s to tear down the iterator of any from_generator pipeline while
# autotune is on (never with it off), a cost per epoch that would swamp a one-second row.
_FINISHED_ITERATORS: list[object] = []


def timed(run: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    count = run()
    seconds = time.perf_counter() - started
    _FINISHED_ITERATORS.clear()
    return seconds, count


def count_elements(dataset: tf.data.Dataset, size: Callable[[object], int]) -> int:
    iterator = iter(dataset)
    count = sum(size(element) for element in iterator)
    _FINISHED_ITERATORS.append(iterator)
    return count


def rows(batch: object) -> int:
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    if isinstance(batch, tuple):
        batch = batch[0]
    return int(batch.shape[0])


def parse_single(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The tutorial's per-record parse."""
    parsed = tf.io.parse_single_example(record, FEATURES)
    return tf.io.decode_raw(parsed["data"], tf.float64), parsed["labels"]


def parse_batch(records: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    parsed = tf.io.parse_example(records, FEATURES)
    return tf.io.decode_raw(parsed["data"], tf.float64), parsed["labels"]


def premade_batches(stream: Path) -> list[np.ndarray]:
    """What PipeModeDataset's generator yields for `stream`, made in advance by the same reader
    and conversion from a regular file."""
    with RecordReader(stream, "RecordIO", max_batch_bytes=RAW_BATCH_BYTES) as reader:
        return [raw_batch_tensor(batch) for batch in reader.batches(RAW_BATCH_RECORDS)]


def measure(
    job: Job, records: list[bytes], tfrecord_file: Path, rounds: int
) -> dict[str, tuple[float, int]]:
    count = len(records) * job.passes
    files = [str(tfrecord_file)] * job.passes
    results: dict[str, tuple[float, int]] = {}

    def fifo_copy(pipe_size: int | None) -> Callable[[], int]:
        def run() -> int:
            fifo = job.serve_next_epoch("copy")
            cat_to_devnull(fifo, job.writers[-1].pid, pipe_size)
            return count

        return run

    batches = premade_batches(job.stream)

    def floor() -> int:
        dataset = records_from_batches(lambda: iter(batches * job.passes)).batch(1024)
        return count_elements(dataset, rows)

    def dataset(**options: object) -> tf.data.Dataset:
        job.serve_next_epoch()
        return PipeModeDataset("train", **job.dirs(), **options)

    runs: dict[str, Callable[[], int]] = {
        "fifo copy, 64 KiB pipe": fifo_copy(None),
        "fifo copy, 1 MiB pipe": fifo_copy(READER_PIPE_SIZE),
        "from_generator floor": floor,
        "raw .batch(1024)": lambda: count_elements(dataset().batch(1024), rows),
        "tutorial (FIFO)": lambda: count_elements(
            dataset().prefetch(10).map(parse_single).batch(64), rows
        ),
        "tutorial (file)": lambda: count_elements(
            tf.data.TFRecordDataset(files).prefetch(10).map(parse_single).batch(64),
            rows,
        ),
        "dense (FIFO)": lambda: count_elements(
            dataset(features=FEATURES, decode_raw={"data": tf.float64}, batch_size=64), rows
        ),
        "TF best (file)": lambda: count_elements(
            tf.data.TFRecordDataset(files, buffer_size=8 << 20).batch(64).map(parse_batch),
            rows,
        ),
    }
    # One untimed pass over TF's own pipelines first, so none pays for tracing or page cache.
    count_elements(tf.data.TFRecordDataset(str(tfrecord_file)).batch(64).map(parse_batch), rows)
    # Rounds interleave the rows and each keeps its best round, so that a burst of other work
    # on a shared machine lands on one round of every row rather than on all rounds of one.
    for _ in range(rounds):
        for name, run in runs.items():
            seconds, seen = timed(run)
            assert seen == count, f"{name} saw {seen} records of {count}"
            results[name] = min(results.get(name, (seconds, seen)), (seconds, seen))
        for name, result in measure_incumbent(job, count).items():
            results[name] = min(results.get(name, result), result)
    return results


INCUMBENT_SCRIPT = """
import json, sys, time, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
from sagemaker_tensorflow import PipeModeDataset
dirs, kind = json.loads(sys.argv[1]), sys.argv[2]
features = {"data": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.FixedLenFeature([], tf.int64)}
def single(r):
    p = tf.io.parse_single_example(r, features)
    return tf.io.decode_raw(p["data"], tf.float64), p["labels"]
def batched(r):
    p = tf.io.parse_example(r, features)
    return tf.io.decode_raw(p["data"], tf.float64), p["labels"]
ds = PipeModeDataset("incumbent", **dirs)
ds = {"raw": ds.batch(1024), "tutorial": ds.prefetch(10).map(single).batch(64),
      "dense": ds.batch(64).map(batched)}[kind]
started = time.perf_counter()
n = 0
for batch in ds:
    n += int((batch[0] if isinstance(batch, tuple) else batch).shape[0])
print(json.dumps([time.perf_counter() - started, n]))
"""


def measure_incumbent(job: Job, count: int) -> dict[str, tuple[float, int]]:
    if not INCUMBENT_PYTHON:
        return {}
    results = {}
    for kind in ("raw", "tutorial", "dense"):
        job.serve_next_epoch("incumbent")
        out = subprocess.run(
            [INCUMBENT_PYTHON, "-c", INCUMBENT_SCRIPT, json.dumps(job.dirs("incumbent")), kind],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        seconds, seen = json.loads(out.splitlines()[-1])
        assert seen == count, f"incumbent {kind} saw {seen} records of {count}"
        results[f"incumbent {kind}"] = (seconds, seen)
    return results


MEMORY_SCRIPT = """
import json, sys, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
from pipemode import PipeModeDataset
dirs, dense = json.loads(sys.argv[1]), sys.argv[2] == "dense"
options = {}
if dense:
    options = dict(features={"data": tf.io.FixedLenFeature([], tf.string),
                             "labels": tf.io.FixedLenFeature([], tf.int64)},
                   decode_raw={"data": tf.float64}, batch_size=64)
ds = PipeModeDataset("train", **dirs, **options)
n = 0
for batch in (ds if dense else ds.batch(1024)):
    n += int(next(iter(batch.values())).shape[0] if dense else batch.shape[0])
# VmHWM, not ru_maxrss: ru_maxrss survives exec, so it would report the parent's size.
status = open("/proc/self/status").read()
peak_kb = int(status.split("VmHWM:")[1].split()[0])
print(json.dumps([n, peak_kb * 1024]))
"""


def measure_memory(job: Job, stream_bytes: int) -> list[tuple[str, int, int, int]]:
    rows_ = []
    for path in ("raw", "dense"):
        for target in (400 << 20, 4 << 30):
            repeats = max(1, round(target / stream_bytes))
            job.serve_next_epoch(repeats=repeats)
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_SCRIPT, json.dumps(job.dirs()), path],
                capture_output=True,
                check=True,
                text=True,
            ).stdout
            records, peak = json.loads(out.splitlines()[-1])
            rows_.append((path, repeats * stream_bytes, records, peak))
    return rows_


def report(results: dict[str, tuple[float, int]], record_bytes: int) -> None:
    def rate(name: str) -> float:
        if name == "fifo copy limit":  # the faster of the two `cat` peers (see fifo_copy.py)
            return max(rate("fifo copy, 64 KiB pipe"), rate("fifo copy, 1 MiB pipe"))
        seconds, count = results[name]
        return count / seconds

    print(f"{'pipeline':24} {'records/s':>12} {'MB/s':>9}")
    for name, (seconds, count) in results.items():
        print(f"{name:24} {count / seconds:12,.0f} {count * record_bytes / seconds / 1e6:9,.0f}")
    print()
    ratios = [
        ("dense / fifo copy limit", "dense (FIFO)", "fifo copy limit", 0.8),
        ("dense / TF best (file)", "dense (FIFO)", "TF best (file)", 2.0),
        ("raw / from_generator floor", "raw .batch(1024)", "from_generator floor", 0.8),
        ("tutorial FIFO / file", "tutorial (FIFO)", "tutorial (file)", 0.9),
    ]
    if "incumbent dense" in results:
        ratios += [
            ("dense / incumbent dense", "dense (FIFO)", "incumbent dense", None),
            ("raw / incumbent raw", "raw .batch(1024)", "incumbent raw", None),
            ("tutorial / incumbent", "tutorial (FIFO)", "incumbent tutorial", None),
        ]
    for label, ours, theirs, target in ratios:
        wanted = f"(target >= {target}x)" if target else ""
        print(f"{label:30} {rate(ours) / rate(theirs):6.2f}x {wanted}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=12_000)
    # 16 passes: about a second per fast row, so that what a dataset costs once per epoch
    # (tracing, the writer's start, the first block) is a few percent, not a quarter, of it.
    parser.add_argument("--passes", type=int, default=16, help="times each row reads the records")
    parser.add_argument("--rounds", type=int, default=3, help="each row keeps its best round")
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="pipemode-bench-"))
    job = None
    try:
        records = tutorial_examples(args.records)
        stream = root / "stream.recordio"
        stream.write_bytes(recordio(records))
        tfrecord_file = root / "stream.tfrecord"
        with tf.io.TFRecordWriter(str(tfrecord_file)) as writer:
            for record in records:
                writer.write(record)
        record_bytes = stream.stat().st_size // len(records)
        print(
            f"{len(records)} records of {record_bytes} B (RecordIO), "
            f"{stream.stat().st_size / 1e6:.0f} MB, read {args.passes} times per row; "
            f"TF {tf.__version__}, "
            f"{os.cpu_count()} cores\n"
        )
        job = Job(root, stream, args.passes)
        report(measure(job, records, tfrecord_file, args.rounds), record_bytes)
        if args.memory:
            print(f"\n{'path':6} {'stream MB':>10} {'records':>10} {'peak RSS MB':>12}")
            for path, size, count, peak in measure_memory(job, stream.stat().st_size):
                print(f"{path:6} {size / 1e6:10,.0f} {count:10,} {peak / 1e6:12,.0f}")
    finally:
        if job is not None:
            job.close()
        shutil.rmtree(root, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"\nbench process peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
