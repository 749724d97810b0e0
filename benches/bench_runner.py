"""The runner's own speed, each against its peer in the same run.

1. Feeding: a training job whose script reads its channel's FIFO in 1 MiB `readinto` calls, fed
   by the runner's feeder (sendfile through a 1 MiB pipe), against the same reader on a FIFO fed
   by `cat file > fifo`, the usual way to fake Pipe Mode by hand.
2. Generating: `pipemode generate` (numpy draws, `encode_example`, the Rust writer) against the
   same draws serialized with `tf.train.Example` and written with `tf.io.TFRecordWriter`.

    python benches/bench_runner.py [--megabytes 1000] [--records 20000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pipemode.generate import generate
from pipemode.runner import Channel, TrainingJob

_READ = """
import json, os, sys, time
def read_all(path):
    while not os.path.exists(path):
        time.sleep(0.001)
    buffer = bytearray(1 << 20)
    total = 0
    with open(path, "rb", buffering=0) as f:
        started = time.perf_counter()
        while n := f.readinto(buffer):
            total += n
    return total, time.perf_counter() - started
"""

_JOB_SCRIPT = (
    _READ
    + """
data = os.path.join(os.environ["SM_INPUT_DIR"], "data")
runs = [read_all(os.path.join(data, f"train_{epoch}")) for epoch in range(int(sys.argv[-1]))]
with open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "runs.json"), "w") as f:
    json.dump(runs, f)
"""
)

_CAT_SCRIPT = _READ + "print(json.dumps(read_all(sys.argv[1])))\n"


def best_rate(runs: list[list[float]]) -> float:
    return max(total / seconds for total, seconds in runs)


def feed_with_runner(folder: Path, data: Path, epochs: int) -> float:
    script = folder / "read.py"
    script.write_text(_JOB_SCRIPT)
    job = TrainingJob(
        script,
        [Channel("train", str(data))],
        script_args=[str(epochs)],
        output_path=folder / "jobs",
        job_name="bench",
    )
    result = job.run(stderr=io.StringIO(), live=False)
    runs = json.loads((result.hosts[0].output_data_dir / "runs.json").read_text())
    return best_rate(runs)


def feed_with_cat(folder: Path, data: Path, epochs: int) -> float:
    script = folder / "read_cat.py"
    script.write_text(_CAT_SCRIPT)
    runs = []
    for epoch in range(epochs):
        fifo = folder / f"cat_{epoch}"
        os.mkfifo(fifo)
        cat = subprocess.Popen(["sh", "-c", 'exec cat "$0" > "$1"', str(data), str(fifo)])
        reader = subprocess.run(
            [sys.executable, str(script), str(fifo)], capture_output=True, text=True, check=True
        )
        cat.wait()
        runs.append(json.loads(reader.stdout))
    return best_rate(runs)


def generate_with_tensorflow(out: Path, records: int, seed: int = 0) -> float:
    """The tutorial's data the way TF writes it: same draws, tf.train.Example, TFRecordWriter."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    total = 0
    started = time.perf_counter()
    with tf.io.TFRecordWriter(str(out)) as writer:
        for start in range(0, records, 512):
            labels = np.arange(start, min(start + 512, records)) % 2
            data = rng.standard_normal((len(labels), 1024)) + np.trunc(labels - 1.0)[:, None]
            for row, label in zip(data, labels.tolist()):
                feature = {
                    "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()])),
                    "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }
                record = tf.train.Example(
                    features=tf.train.Features(feature=feature)
                ).SerializeToString()
                writer.write(record)
                total += len(record)
    return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=1000, help="size of the fed file")
    parser.add_argument("--epochs", type=int, default=3, help="epochs fed; the best is kept")
    parser.add_argument("--records", type=int, default=20_000, help="records generated")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipemode-bench-") as scratch:
        folder = Path(scratch)
        data = folder / "data.bin"
        data.write_bytes(os.urandom(1 << 20) * args.megabytes)
        runner = feed_with_runner(folder, data, args.epochs)
        cat = feed_with_cat(folder, data, args.epochs)
        data.unlink()
        print(f"\nFeeding a {args.megabytes} MB file, best of {args.epochs} epochs:\n")
        print("| feeder | MB/s | ratio |\n|---|---:|---:|")
        print(f"| `cat file > fifo` | {cat / 1e6:,.0f} | 1.00x |")
        print(f"| pipemode runner | {runner / 1e6:,.0f} | {runner / cat:.2f}x |")

        ours = generate(folder / "ours", args.records, record_format="TFRecord")
        theirs = generate_with_tensorflow(folder / "tf.tfrecord", args.records)
        print(f"\nGenerating {args.records} tutorial records as TFRecord:\n")
        print("| writer | MB/s | ratio |\n|---|---:|---:|")
        print(f"| `tf.train.Example` + `tf.io.TFRecordWriter` | {theirs / 1e6:,.0f} | 1.00x |")
        rate = ours.megabytes_per_second * 1e6
        print(f"| `pipemode generate` | {rate / 1e6:,.0f} | {rate / theirs:.2f}x |")


if __name__ == "__main__":
    main()
