"""The tutorial's training script on pipemode's fast path: Examples decoded in Rust.

`PipeModeDataset(channel, features=..., decode_raw=...)` decodes the records into dense batches
of `batch_size` before they reach TensorFlow, in place of the per-record parse_single_example +
decode_raw of `tutorial.py`. Model, hyperparameters and export are `tutorial.py`'s.
"""

from __future__ import annotations

import argparse

import tensorflow as tf

from pipemode import PipeModeDataset
from pipemode.examples.tutorial import FEATURES, parse_args, train_and_evaluate


def dataset(channel: str, args: argparse.Namespace) -> tf.data.Dataset:
    ds = PipeModeDataset(
        channel, features=FEATURES, decode_raw={"data": tf.float64}, batch_size=args.batch_size
    )
    ds = ds.map(
        lambda batch: (tf.ensure_shape(batch["data"], [None, args.dimension]), batch["labels"])
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def main() -> None:
    args = parse_args()
    train_and_evaluate(args, dataset("train", args), dataset("eval", args))


if __name__ == "__main__":
    main()
