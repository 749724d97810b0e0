"""`pipemode demo`: the SageMaker Pipe Mode tutorial, end to end, on this machine.

Generates the tutorial's synthetic train and eval channels, runs the tutorial's Keras training
script through the local Pipe Mode runner (FIFOs fed epoch after epoch, as SageMaker feeds them),
and reports the evaluation accuracy and the input throughput. The defaults take about a minute on
two cores; the job's model.tar.gz stays under `output_path`. The CLI's options are in cli.py.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

from pipemode.errors import PipeModeError
from pipemode.examples import TUTORIAL, TUTORIAL_DENSE
from pipemode.generate import generate
from pipemode.runner import Channel, JobResult, TrainingJob
from pipemode.runner.job import DEFAULT_OUTPUT_PATH, default_job_name

__all__ = ["run_demo"]


def _report(result: JobResult, metrics: dict[str, float], record_bytes: float, dense: bool) -> str:
    train = next(s for s in result.channels if s.channel == "train")
    records_per_second = train.throughput / record_bytes
    steps_per_second = metrics["train_steps"] / metrics["train_seconds"]
    path = "dense Rust decoding" if dense else "parse_single_example in TF"
    return "\n".join(
        [
            f"pipemode demo: the Pipe Mode tutorial trained locally ({path})",
            f"  eval accuracy       {metrics['eval_accuracy']:.4f}"
            f"  (eval loss {metrics['eval_loss']:.4f})",
            f"  training            {metrics['train_steps']} steps"
            f" in {metrics['train_seconds']:.1f} s ({steps_per_second:.0f} steps/s)",
            f"  train input         {train.epochs_served} epoch(s), {train.bytes / 1e6:.1f} MB at "
            f"{train.throughput / 1e6:.1f} MB/s ({records_per_second:,.0f} records/s) while read",
            f"  model               {result.model_data}",
        ]
    )


def run_demo(
    *,
    train_records: int = 20_000,
    eval_records: int = 4_000,
    epochs: int = 5,
    steps: int = 300,
    dense: bool = False,
    output_path: Path = DEFAULT_OUTPUT_PATH,
    seed: int = 0,
) -> int:
    """Generates the channels, trains, prints the report; returns the job's exit code."""
    if min(train_records, eval_records, epochs, steps) < 1:
        # Records per second divide by the train records; the tutorial evaluates on eval.
        raise ValueError("the record counts, epochs and steps must be at least 1")
    # The training script imports TensorFlow in its own process: say what is missing up front
    # rather than after generating the data, in a traceback from the script.
    if importlib.util.find_spec("tensorflow") is None:
        raise PipeModeError("the demo trains with TensorFlow: pip install 'pipemode[tensorflow]'")
    with tempfile.TemporaryDirectory(prefix="pipemode-demo-") as scratch:
        data = Path(scratch)
        made = {}
        for channel, records, channel_seed in (
            ("train", train_records, seed),
            ("eval", eval_records, seed + 1),
        ):
            made[channel] = generate(data / channel, records, files=4, seed=channel_seed)
            print(
                f"pipemode demo: generated {channel}: {records} records, "
                f"{made[channel].bytes / 1e6:.0f} MB in {made[channel].seconds:.2f} s "
                f"({made[channel].megabytes_per_second:.0f} MB/s)",
                file=sys.stderr,
            )
        # What one record takes in the FIFO, framing included: the unit of records/s.
        record_bytes = sum(f.stat().st_size for f in made["train"].files) / train_records
        job = TrainingJob(
            entry_point=TUTORIAL_DENSE if dense else TUTORIAL,
            channels=[Channel("train", str(data / "train")), Channel("eval", str(data / "eval"))],
            hyperparameters={"epochs": str(epochs), "steps": str(steps)},
            output_path=output_path,
            job_name=default_job_name("pipemode-demo"),
        )
        result = job.run()
    if not result.succeeded:
        return result.exit_code
    metrics_file = result.hosts[0].output_data_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    print(_report(result, metrics, record_bytes, dense))
    return 0
