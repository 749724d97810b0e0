"""The Pipe Mode tutorial's classifier trained with MultiWorkerMirroredStrategy and a custom loop.

Each host reads its own Pipe Mode channel `train` (with `ShardedByS3Key`, its own share of the
objects) with PipeModeDataset; every worker computes gradients on its batches and the strategy
sums them across workers, so all hosts hold the same weights after every step.

The pattern that never hangs on uneven shards: `repeat()` the channel, and train a fixed number
of steps per epoch that every worker agrees on (a hyperparameter, the same on every host). Each
worker then calls the collective the same number of times and they all end at the same step,
however many records each host's shard holds: a host with fewer records just starts its next
Pipe Mode epoch sooner. Iterating each host's channel to its end instead would leave the worker
with the larger shard waiting in a collective that its peers never join.

    pipemode train --instance-count 2 --distribution multi_worker_mirrored_strategy \\
        --input-data-config sharded.json examples/mwms_custom_loop.py --epochs 3 --steps 100

The same file runs on one host (no TF_CONFIG: one worker), and on SageMaker with
`TensorFlow(..., distribution={"multi_worker_mirrored_strategy": {"enabled": True}})`.
It uses Keras 3 layers and optimizer in a custom loop, which MultiWorkerMirroredStrategy runs on
TF 2.16+ (Keras 3 `model.fit` under this strategy does not: keras-team/keras#20585).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import tensorflow as tf
from pipemode import PipeModeDataset

FEATURES = {
    "data": tf.io.FixedLenFeature([], tf.string),
    "labels": tf.io.FixedLenFeature([], tf.int64),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch, on every host")
    parser.add_argument("--global-batch-size", type=int, default=64, help="over all workers")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--dimension", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--eval-steps", type=int, default=60, help="batches of `eval` scored")
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--output-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "output"))
    return parser.parse_args()


def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    parsed = tf.io.parse_single_example(record, FEATURES)
    return tf.io.decode_raw(parsed["data"], tf.float64), parsed["labels"]


def batches(channel: str, batch_size: int, dimension: int) -> tf.data.Dataset:
    # PipeModeDataset is never auto-sharded by the strategy: each host's pipe already holds only
    # what that host should read, and all of it is read.
    ds = PipeModeDataset(channel).repeat()
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda x, y: (tf.ensure_shape(x, [batch_size, dimension]), y)).prefetch(2)
    # Endless, as repeat() over a pipe is: said so, the strategy skips the collective it would
    # otherwise run before every step to learn whether every worker still has data.
    return ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))


def build_model(args: argparse.Namespace) -> tf.keras.Model:
    # Standardising each input (an affine map, so the classifier stays linear) lets Adam train
    # in tens of steps: raw, the class means (-1 and 0) would need a bias ~500 times the weights.
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(args.dimension,), dtype=tf.float64),
            tf.keras.layers.Lambda(lambda x: (x + 0.5) * 2.0),
            tf.keras.layers.Dense(args.classes),
        ]
    )


class Trainer:
    """One model, optimizer and step function under the strategy."""

    def __init__(self, strategy: tf.distribute.Strategy, args: argparse.Namespace) -> None:
        self.strategy = strategy
        self.global_batch_size = args.global_batch_size
        with strategy.scope():
            self.model = build_model(args)
            self.optimizer = tf.keras.optimizers.Adam(args.learning_rate)
        self.loss = tf.keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="none"
        )

    @tf.function
    def train_step(self, iterator: tf.distribute.DistributedIterator) -> tf.Tensor:
        """One step on every worker; returns this worker's share of the loss (summing it over
        the workers would cost a collective per step)."""

        def step(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                per_record = self.loss(y, self.model(x, training=True))
                # Scaled by the global batch: the strategy sums the workers' gradients.
                loss = tf.nn.compute_average_loss(
                    per_record, global_batch_size=self.global_batch_size
                )
            variables = self.model.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        losses = self.strategy.run(step, args=next(iterator))
        return tf.add_n(self.strategy.experimental_local_results(losses))

    def evaluate(self, data: tf.data.Dataset, steps: int) -> dict[str, float]:
        """Accuracy and mean loss on this host's own batches, outside the strategy."""
        right = total = 0
        loss = 0.0
        for x, y in data.take(steps):
            logits = self.model(x, training=False)
            predicted = tf.argmax(logits, axis=1)
            right += int(tf.reduce_sum(tf.cast(predicted == y, tf.int32)))
            loss += float(tf.reduce_sum(self.loss(y, logits)))
            total += int(tf.size(y))
        return {"eval_accuracy": right / max(total, 1), "eval_loss": loss / max(total, 1)}


def is_chief() -> bool:
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    return config.get("task", {}).get("index", 0) == 0


def main() -> None:
    args = parse_args()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    workers = strategy.num_replicas_in_sync
    if args.global_batch_size % workers:
        raise SystemExit(f"--global-batch-size must divide among {workers} workers")
    trainer = Trainer(strategy, args)
    # Batched by the global batch size: the strategy gives each worker its share of every
    # batch its own pipe yields (32 of 64 with 2 workers).
    train = batches("train", args.global_batch_size, args.dimension)
    iterator = iter(strategy.experimental_distribute_dataset(train))
    started = time.perf_counter()
    for epoch in range(args.epochs):
        losses = [float(trainer.train_step(iterator)) for _ in range(args.steps)]
        # Scaled by the global batch: this worker's part of the mean loss.
        print(
            f"epoch {epoch + 1}: loss (this worker's part) {sum(losses) / len(losses):.4f}",
            flush=True,
        )
    train_seconds = time.perf_counter() - started
    evaluation = batches("eval", 64, args.dimension)
    metrics = {
        "workers": workers,
        "train_steps": int(trainer.optimizer.iterations.numpy()),
        "train_seconds": train_seconds,
        **trainer.evaluate(evaluation, args.eval_steps),
    }
    print(json.dumps(metrics), flush=True)
    if is_chief():
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)
        trainer.model.save_weights(os.path.join(args.model_dir, "classifier.weights.h5"))


if __name__ == "__main__":
    main()
