"""Image classification on an augmented manifest of JPEG images, streamed in Pipe Mode.

The channels `train` and `eval` are AugmentedManifestFile channels with AttributeNames
`["source-ref", "class"]` and RecordWrapperType RecordIO: for each manifest line SageMaker (or
`pipemode train`) streams the image's bytes, then its class as text, each as one record.
`PipeModeDataset(channel, attribute_names=...)` hands each line back as one element,
`{"source-ref": jpeg bytes, "class": b"1"}`, decoded here with `tf.io.decode_jpeg`. A small
convolutional network learns the classes; the model is exported to `SM_MODEL_DIR` on the first
host. Data to try it with: `pipemode generate DIR --images` (see examples/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import tensorflow as tf

from pipemode import PipeModeDataset
from pipemode.examples.tutorial import export_saved_model, is_first_host

ATTRIBUTES = ["source-ref", "class"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="passes over the train channel")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--image-size", type=int, default=32, help="images are resized to this")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--output-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "output"))
    return parser.parse_args(argv)


def dataset(channel: str, args: argparse.Namespace) -> tf.data.Dataset:
    """One Pipe Mode epoch per iteration: (image, class) batches from the manifest's lines."""

    def parse(line: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_jpeg(line["source-ref"], channels=3)
        image = tf.image.resize(image, [args.image_size, args.image_size]) / 255.0
        label = tf.strings.to_number(line["class"], out_type=tf.int32)
        return image, label

    ds = PipeModeDataset(channel, attribute_names=ATTRIBUTES)
    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(args.batch_size).prefetch(2)


def classifier(args: argparse.Namespace) -> tf.keras.Model:
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=(args.image_size, args.image_size, 3)),
            tf.keras.layers.Conv2D(8, 3, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(args.classes),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(args.learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def main() -> None:
    args = parse_args()
    model = classifier(args)
    with warnings.catch_warnings():
        # Keras warns when a dataset of unknown length ends, as one epoch of a channel does.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        # Each Keras epoch iterates the dataset anew, so reads the channel's next Pipe Mode epoch.
        history = model.fit(dataset("train", args), epochs=args.epochs, verbose=2)
        scores = model.evaluate(dataset("eval", args), verbose=2, return_dict=True)
    metrics = {
        "train_loss": float(history.history["loss"][-1]),
        "eval_loss": float(scores["loss"]),
        "eval_accuracy": float(scores["accuracy"]),
    }
    print(json.dumps(metrics))
    if is_first_host():
        export_saved_model(model, os.path.join(args.model_dir, "1"))
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)


if __name__ == "__main__":
    main()
