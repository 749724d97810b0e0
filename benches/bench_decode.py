"""Dense Example decoding on the numpy side, on 8 KB tutorial records (facts §6: `data` =
1024 float64 as bytes, `labels` = int64), in one run:

1. in memory, one core: `pipemode.decode_examples` against `tf.io.parse_example` +
   `tf.io.decode_raw` on the same batch. Both start from records in memory (a list of `bytes`
   for pipemode, the same batch as a `tf.string` tensor for TF, made outside the timing) and end
   with dense `float64[batch, 1024]` and `int64[batch]` arrays.
2. through a FIFO fed by `cat`: `pipemode.DenseReader` (RecordIO, batch_size=64) yielding numpy
   batches, against the FIFO copy limit (Python `readinto` of 1 MiB chunks from the same FIFO,
   pipe enlarged to 1 MiB, into /dev/null), with `pipemode.RecordReader`'s raw batches of 1024
   records for reference (the same reader thread, without decoding).

    python benches/bench_decode.py [--batch 1024] [--seconds 2] [--fifo-records 20000]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pipemode import (
    DenseReader,
    FixedLenFeature,
    RecordReader,
    RecordWriter,
    decode_examples,
    encode_example,
)
from pipemode.decode import example_spec


def tutorial_records(count: int, classes: int = 2) -> list[bytes]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        label = i % classes
        data = rng.normal(int(label - classes / 2), 1.0, 1024)
        records.append(encode_example({"data": data.tobytes(), "labels": [label]}))
    return records


def rate(run: Callable[[], object], seconds: float) -> float:
    """Calls per second, best of several rounds of about `seconds / 5` each."""
    run()  # warm up
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            run()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return 1.0 / best


F_SETPIPE_SZ = 1031  # Linux fcntl


def through_fifo(source: Path, consume: Callable[[Path], int]) -> tuple[float, int]:
    """Seconds and bytes for `consume(fifo)` while `cat` writes `source` into the FIFO."""
    with tempfile.TemporaryDirectory() as folder:
        fifo = Path(folder) / "train_0"
        os.mkfifo(fifo)
        writer = subprocess.Popen(["sh", "-c", 'exec cat "$0" > "$1"', str(source), str(fifo)])
        start = time.perf_counter()
        consumed = consume(fifo)
        seconds = time.perf_counter() - start
        writer.wait()
    return seconds, consumed


def copy_limit(fifo: Path) -> int:
    buffer = bytearray(1 << 20)
    total = 0
    with open(fifo, "rb", buffering=0) as pipe:
        fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, 1 << 20)
        while n := pipe.readinto(buffer):
            total += n
    return total


def raw_batches(fifo: Path) -> int:
    return sum(len(batch) for batch in RecordReader(fifo).batches(1024))


def dense_reader(spec: object) -> Callable[[Path], int]:
    def consume(fifo: Path) -> int:
        rows = 0
        with DenseReader(fifo, features=spec, batch_size=64) as reader:
            for batch in reader:
                rows += len(batch["labels"])
        return rows

    return consume


def fifo_comparison(records: list[bytes], count: int, spec: object, rounds: int = 3) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "train.rec"
        with RecordWriter(source, "RecordIO") as writer:
            for i in range(count):
                writer.write(records[i % len(records)])
        size = source.stat().st_size
        contenders = {
            "FIFO copy limit": copy_limit,
            "pipemode.RecordReader (raw)": raw_batches,
            "pipemode.DenseReader": dense_reader(spec),
        }
        best = {}
        for name, consume in contenders.items():
            runs = [through_fifo(source, consume) for _ in range(rounds)]
            assert all(n in (count, size) for _, n in runs), runs
            best[name] = min(seconds for seconds, _ in runs)
    print(f"\n{count} RecordIO records ({size / 1e6:.0f} MB) through a FIFO, best of {rounds}")
    print(f"{'':36} {'examples/s':>12} {'MB/s':>9} {'ratio':>7}")
    copy = best["FIFO copy limit"]
    for name, seconds in best.items():
        mb_per_s = size / seconds / 1e6
        print(f"{name:36} {count / seconds:12,.0f} {mb_per_s:9,.0f} {copy / seconds:6.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024, help="records per decode call")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per contender")
    parser.add_argument("--fifo-records", type=int, default=20000, help="records per FIFO pass")
    args = parser.parse_args()

    records = tutorial_records(args.batch)
    nbytes = sum(map(len, records))
    spec = example_spec(
        {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")},
        decode_raw={"data": "float64"},
    )
    results = {
        "pipemode.decode_examples": rate(lambda: decode_examples(records, spec), args.seconds)
    }

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        print("TensorFlow is not installed: no comparison")
    else:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf_spec = {
            "data": tf.io.FixedLenFeature([], tf.string),
            "labels": tf.io.FixedLenFeature([], tf.int64),
        }
        batch = tf.constant(records)

        @tf.function
        def parse(batch: tf.Tensor) -> dict[str, tf.Tensor]:
            parsed = tf.io.parse_example(batch, tf_spec)
            return {
                "data": tf.io.decode_raw(parsed["data"], tf.float64),
                "labels": parsed["labels"],
            }

        def run_tf() -> None:
            out = parse(batch)
            out["data"].numpy()

        results["tf.io.parse_example + decode_raw"] = rate(run_tf, args.seconds)

    print(f"{args.batch} records of {nbytes // args.batch} B per call, one core")
    print(f"{'':36} {'examples/s':>12} {'MB/s':>9} {'ratio':>7}")
    baseline = results.get("tf.io.parse_example + decode_raw")
    for name, calls in results.items():
        examples = calls * args.batch
        ratio = f"{calls / baseline:6.2f}x" if baseline else ""
        print(f"{name:36} {examples:12,.0f} {calls * nbytes / 1e6:9,.0f} {ratio:>7}")

    fifo_comparison(records, args.fifo_records, spec)


if __name__ == "__main__":
    main()
