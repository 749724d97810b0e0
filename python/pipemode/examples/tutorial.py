"""The SageMaker Pipe Mode tutorial's training script, in modern Keras.

A linear classifier over records of tf.train.Example (`data`: 1024 float64 as raw bytes,
`labels`: int64), read from the Pipe Mode channels `train` and `eval` with PipeModeDataset. The
original used tf.estimator.LinearClassifier, which TensorFlow 2.16 removed; the data pipeline is
the tutorial's: RecordIO records, prefetch, parse_single_example + decode_raw, batches of 64.

The same file runs on SageMaker (with `from sagemaker_tensorflow import PipeModeDataset` on its
old containers, or pipemode installed) and locally: `pipemode train --channel train=DIR
--channel eval=DIR tutorial.py`. Hyperparameters arrive as `--name value`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import time
import warnings

import tensorflow as tf

from pipemode import PipeModeDataset

FEATURES = {
    "data": tf.io.FixedLenFeature([], tf.string),
    "labels": tf.io.FixedLenFeature([], tf.int64),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--dimension", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--output-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "output"))
    return parser.parse_args(argv)


def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    parsed = tf.io.parse_single_example(record, FEATURES)
    return tf.io.decode_raw(parsed["data"], tf.float64), parsed["labels"]


def dataset(channel: str, args: argparse.Namespace) -> tf.data.Dataset:
    ds = PipeModeDataset(channel)  # RecordIO records, one Pipe Mode epoch per iteration
    ds = ds.prefetch(10)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(args.batch_size)
    return ds.map(lambda x, y: (tf.ensure_shape(x, [None, args.dimension]), y))


def linear_classifier(args: argparse.Namespace) -> tf.keras.Model:
    # The class means are -1 and 0 in every dimension: raw, the bias would have to grow ~500 times
    # as large as the weights, which takes Adam hundreds of steps. Standardising the inputs (an
    # affine map once trained, so the classifier stays linear) makes tens of steps enough.
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(args.dimension,), dtype=tf.float64),
            tf.keras.layers.BatchNormalization(momentum=0.9),
            tf.keras.layers.Dense(args.classes),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(args.learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def is_first_host() -> bool:
    hosts = json.loads(os.environ.get("SM_HOSTS", '["algo-1"]'))
    return os.environ.get("SM_CURRENT_HOST", hosts[0]) == hosts[0]


def train_and_evaluate(
    args: argparse.Namespace, train: tf.data.Dataset, evaluation: tf.data.Dataset
) -> dict[str, float]:
    """Trains `epochs` x `steps` steps, evaluates on one pass of `evaluation`, exports, reports.

    `repeat()` reads the Pipe Mode channel epoch after epoch (each pass opens the next FIFO) for
    as many steps as training takes.
    """
    model = linear_classifier(args)
    started = time.perf_counter()
    history = model.fit(
        train.repeat(), epochs=args.epochs, steps_per_epoch=args.steps, shuffle=False, verbose=2
    )
    train_seconds = time.perf_counter() - started
    with warnings.catch_warnings():
        # Keras warns when a dataset of unknown length ends, as one epoch of a channel does.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        scores = model.evaluate(evaluation, verbose=2, return_dict=True)
    metrics = {
        "train_steps": int(model.optimizer.iterations.numpy()),
        "train_seconds": train_seconds,
        "train_loss": float(history.history["loss"][-1]),
        "eval_loss": float(scores["loss"]),
        "eval_accuracy": float(scores["accuracy"]),
    }
    print(json.dumps(metrics))
    if is_first_host():
        # export() traces the model alone from an input signature: the SavedModel serves
        # tensors and holds no trace of the Pipe Mode input pipeline.
        export_saved_model(model, os.path.join(args.model_dir, "1"))
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)
    return metrics


def export_saved_model(model: tf.keras.Model, path: str) -> None:
    """A SavedModel for TF Serving. Keras 3 prints the exported signatures unless told not to;
    Keras 2 (TF 2.15 and older) prints nothing and has no `verbose`."""
    if "verbose" in inspect.signature(model.export).parameters:
        model.export(path, verbose=False)
    else:
        model.export(path)


def main() -> None:
    args = parse_args()
    train_and_evaluate(args, dataset("train", args), dataset("eval", args))


if __name__ == "__main__":
    main()
