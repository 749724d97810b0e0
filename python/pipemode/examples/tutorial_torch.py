"""The SageMaker Pipe Mode tutorial's training script, in PyTorch.

`tutorial.py`'s linear classifier and data, read from the Pipe Mode channels `train` and `eval`
with `pipemode.torch.PipeModeDataset`: by default the Examples are decoded in Rust into batches
of `--batch-size` (one tensor dict per DataLoader item); `--per-record` parses each record in a
`transform` instead, as the tutorial's `parse_single_example` did, batched by DataLoader, with
`--workers` DataLoader workers parsing in parallel.

Runs unchanged on SageMaker (with pipemode installed) and locally:
`pipemode train --channel train=DIR --channel eval=DIR tutorial_torch.py`. Hyperparameters
arrive as `--name value`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from pipemode import FixedLenFeature, decode_examples
from pipemode.torch import PipeModeDataset

FEATURES = {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")}
DECODE_RAW = {"data": "float64"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--dimension", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader num_workers")
    parser.add_argument("--per-record", action="store_true", help="parse records in Python")
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--output-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "output"))
    return parser.parse_args(argv)


def parse(record: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """One serialized Example to (1024 float64 values, label), as `parse_single_example` +
    `decode_raw` did in the tutorial."""
    example = decode_examples([record], FEATURES, DECODE_RAW)
    return torch.from_numpy(example["data"][0]), torch.from_numpy(example["labels"])[0]


def loader(channel: str, args: argparse.Namespace) -> DataLoader[Any]:
    """One pass over the returned DataLoader reads one Pipe Mode epoch of the channel."""
    if args.per_record:
        dataset = PipeModeDataset(channel, transform=parse, batch_size=args.batch_size)
        return DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    dataset = PipeModeDataset(
        channel, features=FEATURES, decode_raw=DECODE_RAW, batch_size=args.batch_size
    )
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=args.workers,
        collate_fn=lambda batch: (batch["data"], batch["labels"]),
    )


def forever(batches: DataLoader[Any]) -> Iterator[Any]:
    """Epoch after epoch of the channel, for as many steps as training takes."""
    while True:
        yield from batches


def linear_classifier(args: argparse.Namespace) -> nn.Module:
    # As in tutorial.py: the inputs standardised (an affine map once trained, so the classifier
    # stays linear), or the bias would take hundreds of steps to reach the class means.
    return nn.Sequential(
        nn.BatchNorm1d(args.dimension, momentum=0.1, dtype=torch.float64),
        nn.Linear(args.dimension, args.classes, dtype=torch.float64),
    )


def train(model: nn.Module, batches: Iterator[Any], args: argparse.Namespace) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    loss = torch.tensor(0.0)
    for epoch in range(args.epochs):
        for data, labels in itertools.islice(batches, args.steps):
            optimizer.zero_grad()
            loss = loss_fn(model(data), labels)
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.4f}", flush=True)
    return float(loss.item())


@torch.no_grad()
def evaluate(model: nn.Module, batches: DataLoader[Any]) -> tuple[float, float]:
    """Loss and accuracy over one epoch of the channel."""
    model.eval()
    losses, correct, seen = [], 0, 0
    for data, labels in batches:
        logits = model(data)
        losses.append(float(nn.functional.cross_entropy(logits, labels, reduction="sum")))
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
    return sum(losses) / max(seen, 1), correct / max(seen, 1)


def is_first_host() -> bool:
    hosts = json.loads(os.environ.get("SM_HOSTS", '["algo-1"]'))
    return os.environ.get("SM_CURRENT_HOST", hosts[0]) == hosts[0]


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    model = linear_classifier(args)
    started = time.perf_counter()
    train_loss = train(model, forever(loader("train", args)), args)
    train_seconds = time.perf_counter() - started
    eval_loss, eval_accuracy = evaluate(model, loader("eval", args))
    metrics = {
        "train_steps": args.epochs * args.steps,
        "train_seconds": train_seconds,
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "eval_accuracy": eval_accuracy,
    }
    print(json.dumps(metrics))
    if is_first_host():
        # The weights alone, as SageMaker's PyTorch examples save them: `linear_classifier`
        # rebuilds the model to load them into, with no trace of the input pipeline.
        os.makedirs(args.model_dir, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(args.model_dir, "model.pth"))
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)


if __name__ == "__main__":
    main()
