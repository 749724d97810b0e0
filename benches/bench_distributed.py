"""Two hosts against one: the MultiWorkerMirroredStrategy example through `pipemode train`.

The same script (examples/mwms_custom_loop.py: a custom loop, `PipeModeDataset(...).repeat()`,
fixed steps), data and global batch, run as a one-host job and as a two-host job with
`multi_worker_mirrored_strategy` and the train channel `ShardedByS3Key`. Rounds interleave the
two; each job's wall time is the runner's, from the first host's start to the last one's end
(TensorFlow's import, the collective's set-up, training, evaluation, the model packed).
Reported per job: eval accuracy, both hosts' exit, and the two-host job's time over the
one-host job's. On one machine the two hosts share its cores, so the ratio bounds what the
runner and the strategy's collectives add, not what a cluster would gain.

    python benches/bench_distributed.py [--rounds 2] [--epochs 3] [--steps 100]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
from pathlib import Path

from pipemode.generate import generate
from pipemode.runner import Channel, TrainingJob
from pipemode.runner.distribution import Distribution

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mwms_custom_loop.py"


def run_job(root: Path, data: Path, hosts: int, args: argparse.Namespace, name: str) -> dict:
    job = TrainingJob(
        EXAMPLE,
        [
            Channel("train", str(data / "train"), distribution="ShardedByS3Key"),
            Channel("eval", str(data / "eval")),
        ],
        hyperparameters={"epochs": str(args.epochs), "steps": str(args.steps)},
        output_path=root / "jobs",
        job_name=name,
        instance_count=hosts,
        distribution=Distribution("multi_worker_mirrored_strategy") if hosts > 1 else None,
    )
    # The hosts' output is kept for a failure's message, not printed.
    log = io.StringIO()
    result = job.run(stdout=log, stderr=log, live=False)
    if not result.succeeded:
        raise SystemExit(f"{name}: {result.failure}\n{log.getvalue()[-4000:]}")
    metrics = json.loads((result.job_dir / "algo-1/output/data/metrics.json").read_text())
    return {"seconds": result.wall_seconds, **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--records", type=int, default=20000, help="train records in all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate(root / "data" / "train", args.records, files=4, seed=0)
        generate(root / "data" / "eval", 4000, files=1, seed=1)
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for round_ in range(args.rounds):
            for hosts in (1, 2):
                run = run_job(root, root / "data", hosts, args, f"r{round_}-h{hosts}")
                runs[hosts].append(run)
                print(
                    f"round {round_ + 1}, {hosts} host(s): {run['seconds']:.1f} s, "
                    f"{run['train_steps']} steps in {run['train_seconds']:.1f} s, "
                    f"eval accuracy {run['eval_accuracy']:.4f}",
                    flush=True,
                )
    one, two = (statistics.median(r["seconds"] for r in runs[h]) for h in (1, 2))
    print("| hosts | job seconds (median) | eval accuracy | steps |")
    print("|---:|---:|---|---:|")
    for hosts in (1, 2):
        accuracy = ", ".join(f"{r['eval_accuracy']:.4f}" for r in runs[hosts])
        seconds = one if hosts == 1 else two
        print(f"| {hosts} | {seconds:.1f} | {accuracy} | {runs[hosts][0]['train_steps']} |")
    print(f"two hosts / one host, job time: {two / one:.2f}x")


if __name__ == "__main__":
    main()
