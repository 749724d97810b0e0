"""The Pipe Mode tutorial's classifier trained with PyTorch DDP (gloo, CPU) over several hosts.

Each host reads its own Pipe Mode channel `train` (with `ShardedByS3Key`, its own share of the
objects) with `pipemode.torch.PipeModeDataset`, decoded in Rust into batches; DDP averages the
gradients across hosts in every backward pass, so all hosts hold the same weights. As in
`mwms_custom_loop.py`, the channel is read epoch after epoch for a fixed number of steps per
epoch, the same on every host, so uneven shards never leave a host waiting in an all-reduce.

    pipemode train --instance-count 2 --distribution torch_distributed \\
        --input-data-config sharded.json examples/ddp_torch.py --epochs 3 --steps 100

`torch_distributed` gives each host torchrun's variables (`MASTER_ADDR`, `MASTER_PORT`, `RANK`,
`WORLD_SIZE`, `LOCAL_RANK`), as on SageMaker with
`PyTorch(..., distribution={"torch_distributed": {"enabled": True}})`; without them (one host,
no distribution) the script trains alone. One process per host: a FIFO is read by one process.
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
import torch.distributed as dist
from pipemode import FixedLenFeature
from pipemode.torch import PipeModeDataset
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

FEATURES = {"data": FixedLenFeature([], "string"), "labels": FixedLenFeature([], "int64")}
DECODE_RAW = {"data": "float64"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="steps per epoch, on every host")
    parser.add_argument("--global-batch-size", type=int, default=64, help="over all hosts")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--dimension", type=int, default=1024)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--output-dir", default=os.environ.get("SM_OUTPUT_DATA_DIR", "output"))
    return parser.parse_args()


def loader(channel: str, batch_size: int) -> DataLoader[Any]:
    """One pass over the returned DataLoader reads one Pipe Mode epoch of the channel."""
    dataset = PipeModeDataset(
        channel, features=FEATURES, decode_raw=DECODE_RAW, batch_size=batch_size
    )
    return DataLoader(
        dataset, batch_size=None, collate_fn=lambda batch: (batch["data"], batch["labels"])
    )


def forever(batches: DataLoader[Any]) -> Iterator[Any]:
    """Epoch after epoch of the channel, for as many steps as training takes."""
    while True:
        yield from batches


def linear_classifier(args: argparse.Namespace) -> nn.Module:
    # The inputs standardised by a fixed affine map (the class means are -1 and 0), so that Adam
    # trains in tens of steps; the classifier stays linear.
    class Standardise(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x + 0.5) * 2.0

    return nn.Sequential(
        Standardise(), nn.Linear(args.dimension, args.classes, dtype=torch.float64)
    )


def train(model: nn.Module, batches: Iterator[Any], args: argparse.Namespace) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    loss = torch.tensor(0.0)
    for epoch in range(args.epochs):
        for data, labels in itertools.islice(batches, args.steps):
            optimizer.zero_grad()
            loss = loss_fn(model(data), labels)
            loss.backward()  # DDP averages the gradients over the hosts here
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}", flush=True)
    return float(loss.item())


@torch.no_grad()
def evaluate(model: nn.Module, batches: DataLoader[Any]) -> dict[str, float]:
    """Loss and accuracy over one epoch of this host's `eval` channel."""
    losses, correct, seen = [], 0, 0
    for data, labels in batches:
        logits = model(data)
        losses.append(float(nn.functional.cross_entropy(logits, labels, reduction="sum")))
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
    return {"eval_loss": sum(losses) / max(seen, 1), "eval_accuracy": correct / max(seen, 1)}


def weights_in_sync(model: nn.Module) -> bool:
    """Whether every host holds the same weights: each one's sum, gathered and compared."""
    total = torch.stack([p.detach().sum() for p in model.parameters()]).sum().reshape(1)
    sums = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(sums, total)
    return all(bool(torch.equal(s, sums[0])) for s in sums)


def main() -> None:
    args = parse_args()
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
    if args.global_batch_size % world:
        raise SystemExit(f"--global-batch-size must divide among {world} hosts")
    torch.manual_seed(0)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
    model = linear_classifier(args)
    trained = DistributedDataParallel(model) if distributed else model
    started = time.perf_counter()
    train_loss = train(trained, forever(loader("train", args.global_batch_size // world)), args)
    metrics: dict[str, Any] = {
        "hosts": world,
        "train_steps": args.epochs * args.steps,
        "train_seconds": time.perf_counter() - started,
        "train_loss": train_loss,
        **evaluate(model, loader("eval", 256)),
        "weights_in_sync": weights_in_sync(model) if distributed else True,
    }
    print(json.dumps(metrics), flush=True)
    if rank == 0:
        os.makedirs(args.model_dir, exist_ok=True)
        torch.save(model.state_dict(), os.path.join(args.model_dir, "model.pth"))
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
