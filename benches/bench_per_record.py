"""The tutorial's per-record pipeline on PipeModeDataset, the incumbent and TFRecordDataset.

    python benches/bench_per_record.py [--records 24000] [--rounds 5] [--map parse|length]
                                       [--rows pipemode,incumbent,TFRecordDataset]

Every row runs `<source>.prefetch(10).map(fn, num_parallel_calls=AUTOTUNE).batch(64)`, where fn
is the tutorial's `parse_single_example` + `decode_raw` (or, with `--map length`, a trivial
`tf.strings.length`, which leaves what the source and tf.data's machinery cost per record):

  pipemode (FIFO)      pipemode.PipeModeDataset on a FIFO fed by `cat`
  incumbent (FIFO)     sagemaker_tensorflow.PipeModeDataset on the same kind of FIFO, when it is
                       importable in this Python (TF 2.14: see benches/README.md)
  TFRecordDataset      tf.data.TFRecordDataset over a regular (page-cached) file
  from_generator floor `from_generator` + `unbatch` over the arrays pipemode would yield, made
                       before the clock: the design's floor, what no reading costs

Each row runs in a child process of its own, so that no thread of one row lingers into the next
and each row's CPU is its own process's (`time.process_time()`: TF's threads and the reader
thread; `cat` is outside). A child reads a short warm-up epoch first (tracing, thread pools),
builds the timed dataset, then times one epoch counted in graph mode. Rounds interleave the
rows; the table gives each row's median.

Records/s is the steady rate, from the first batch to the last, not the epoch's records over
its wall time (also printed, "epoch"): tf.data's autotuner makes some iterators, whatever their
source, end up to ~0.6 s after their last element (TF 2.14 and 2.21; with `from_tensor_slices`
too, and never with autotuning off), which on epochs this short turned the epoch rate bimodal.
CPU per record is the whole epoch's (the autotuner's wait costs none).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WARM_UP_RECORDS = 2000
ROWS = ("pipemode (FIFO)", "incumbent (FIFO)", "TFRecordDataset (file)", "from_generator floor")
# Rows that read no FIFO.
IN_PROCESS = ("TFRecordDataset (file)", "from_generator floor")


def make_streams(folder: Path, count: int) -> None:
    """The tutorial's records as RecordIO (the whole stream and a warm-up prefix) and TFRecord."""
    from bench_dataset import recordio, tutorial_examples
    from pipemode import RecordWriter

    records = tutorial_examples(count)
    (folder / "stream.recordio").write_bytes(recordio(records))
    (folder / "warm.recordio").write_bytes(recordio(records[:WARM_UP_RECORDS]))
    for name, part in (("stream.tfrecord", records), ("warm.tfrecord", records[:WARM_UP_RECORDS])):
        with RecordWriter(folder / name, "TFRecord") as writer:
            for record in part:
                writer.write(record)


def run_row(row: str, folder: Path, map_fn: str) -> dict[str, float]:
    """One row in a child process: a fresh job folder whose epochs 0 (warm-up) and 1 (timed)
    are FIFOs fed by `cat`, as SageMaker's agent feeds them."""
    job = Path(tempfile.mkdtemp(prefix="job-", dir=folder))
    (job / "config").mkdir()
    (job / "config" / "inputdataconfig.json").write_text(
        json.dumps({"train": {"TrainingInputMode": "Pipe"}})
    )
    writers = []
    if row not in IN_PROCESS:
        for epoch, source in enumerate(("warm.recordio", "stream.recordio")):
            fifo = job / f"train_{epoch}"
            os.mkfifo(fifo)
            command = f'exec cat "{folder / source}" > "{fifo}"'
            writers.append(subprocess.Popen(["sh", "-c", command]))
    try:
        child = [sys.executable, __file__, "--child", row, str(job), str(folder), map_fn]
        out = subprocess.run(child, capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"{row} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.splitlines()[-1])
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()
        shutil.rmtree(job)


def generator_floor(path: str) -> Any:
    """What pipemode's raw path costs TF without reading anything: `from_generator` + `unbatch`
    over the very arrays pipemode yields (`raw_batch_tensor`), all read before the clock."""
    import tensorflow as tf
    from pipemode import RecordReader
    from pipemode.tensorflow import RAW_BATCH_BYTES, RAW_BATCH_RECORDS, raw_batch_tensor

    options = {"batch_size": RAW_BATCH_RECORDS, "max_batch_bytes": RAW_BATCH_BYTES}
    with RecordReader(path, "TFRecord", **options) as reader:
        ready = [raw_batch_tensor(batch) for batch in reader.batches()]
    signature = tf.TensorSpec((None,), tf.string)
    return tf.data.Dataset.from_generator(lambda: iter(ready), output_signature=signature).unbatch()


def child(row: str, job: str, folder: str, map_fn: str) -> None:
    import tensorflow as tf

    features = {
        "data": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.FixedLenFeature([], tf.int64),
    }

    def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_single_example(record, features)
        return tf.io.decode_raw(parsed["data"], tf.float64), parsed["labels"]

    def length(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.strings.length(record), tf.strings.length(record)

    dirs = {"state_dir": f"{job}/state", "pipe_dir": job, "config_dir": f"{job}/config"}
    if row == "incumbent (FIFO)":
        from sagemaker_tensorflow import PipeModeDataset
    else:
        from pipemode import PipeModeDataset

    def tutorial(stream: str) -> tf.data.Dataset:
        if row == "TFRecordDataset (file)":
            source = tf.data.TFRecordDataset(f"{folder}/{stream}.tfrecord")
        elif row == "from_generator floor":
            source = generator_floor(f"{folder}/{stream}.tfrecord")
        else:
            source = PipeModeDataset("train", **dirs)
        fn = parse if map_fn == "parse" else length
        return source.prefetch(10).map(fn, num_parallel_calls=tf.data.AUTOTUNE).batch(64)

    @tf.function
    def count(dataset: tf.data.Dataset) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """Records, those of the first batch, and when the first and the last batch came."""
        records = first_batch = tf.constant(0, tf.int64)
        first = last = tf.constant(0.0, tf.float64)
        for _, labels in dataset:
            now = tf.timestamp()
            size = tf.shape(labels, out_type=tf.int64)[0]
            if records == 0:
                first, first_batch = now, size
            records += size
            last = now
        return records, first_batch, first, last

    count(tutorial("warm"))
    # Built before the clock starts: tracing a dataset is a once-per-script cost.
    dataset = tutorial("stream")
    cpu, wall = time.process_time(), time.perf_counter()
    records, first_batch, first, last = (value.numpy() for value in count(dataset))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        json.dumps(
            {
                "records": int(records),
                # From the first batch to the last: see STEADY in the module's docstring.
                "per_second": (records - first_batch) / (last - first),
                "epoch_per_second": records / wall,
                "cpu_us": cpu * 1e6 / records,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=24_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--map", choices=("parse", "length"), default="parse")
    parser.add_argument(
        "--rows", default="", help="only rows whose names start with one of these (comma-separated)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    import tensorflow as tf

    wanted = tuple(name for name in args.rows.split(",") if name)
    rows = [
        r
        for r in ROWS
        if (r != "incumbent (FIFO)" or importlib.util.find_spec("sagemaker_tensorflow"))
        and (not wanted or r.startswith(wanted))
    ]
    folder = Path(tempfile.mkdtemp(prefix="pipemode-per-record-"))
    try:
        make_streams(folder, args.records)
        print(
            f"{args.records} tutorial records of 8 KB, map={args.map}, TF {tf.__version__}, "
            f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.rounds} rounds\n"
        )
        results: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
        for round_ in range(args.rounds):
            for row in rows:
                result = run_row(row, folder, args.map)
                assert result["records"] == args.records, f"{row}: {result['records']} records"
                results[row].append(result)
                print(
                    f"round {round_ + 1} {row:24} {result['per_second']:9,.0f} records/s "
                    f"(epoch {result['epoch_per_second']:7,.0f}) "
                    f"{result['cpu_us']:7.1f} us CPU per record",
                    flush=True,
                )
        report(results)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def report(results: dict[str, list[dict[str, float]]]) -> None:
    def median(row: str, key: str) -> float:
        return statistics.median(result[key] for result in results[row])

    print(f"\n{'median':24} {'records/s':>10} {'(epoch)':>10} {'CPU us/record':>14}")
    for row in results:
        print(
            f"{row:24} {median(row, 'per_second'):10,.0f} "
            f"{median(row, 'epoch_per_second'):10,.0f} {median(row, 'cpu_us'):14.1f}"
        )
    print()
    ours = "pipemode (FIFO)"
    if ours not in results:  # --rows left it out: nothing to compare
        return
    for theirs in results:
        if theirs == ours:
            continue
        # Per round too: the rows of one round ran within a minute of each other.
        speed = [a["per_second"] / b["per_second"] for a, b in zip(results[ours], results[theirs])]
        cpu = [a["cpu_us"] / b["cpu_us"] for a, b in zip(results[ours], results[theirs])]
        speed_ratio = median(ours, "per_second") / median(theirs, "per_second")
        cpu_ratio = median(ours, "cpu_us") / median(theirs, "cpu_us")
        print(
            f"pipemode / {theirs:24} records/s {speed_ratio:.2f}x "
            f"(per round, median {statistics.median(speed):.2f}x), CPU per record "
            f"{cpu_ratio:.2f}x (per round, median {statistics.median(cpu):.2f}x)"
        )


if __name__ == "__main__":
    main()
