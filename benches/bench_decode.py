"""Dense Example decoding on the numpy side: `pipemode.decode_examples` against
`tf.io.parse_example` + `tf.io.decode_raw` on the same batches of 8 KB tutorial records
(facts §6: `data` = 1024 float64 as bytes, `labels` = int64), in one run, one core.

    python benches/bench_decode.py [--batch 1024] [--seconds 2]

Both sides start from records already in memory (a list of `bytes` for pipemode, the same
batch as a `tf.string` tensor for TF, converted outside the timing) and end with dense
`float64[batch, 1024]` and `int64[batch]` arrays.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from pipemode import FixedLenFeature, decode_examples, encode_example
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024, help="records per decode call")
    parser.add_argument("--seconds", type=float, default=2.0, help="time per contender")
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


if __name__ == "__main__":
    main()
