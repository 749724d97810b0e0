"""The `pipemode` command: `train` a script through local Pipe Mode, `generate` the tutorial's
data, and `demo` both end to end."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipemode.errors import PipeModeError

__all__ = ["main", "non_negative_int", "positive_int"]


def positive_int(text: str) -> int:
    """An argparse type: a count of at least 1 (argparse then exits with a one-line message)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a count that may be 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="run a training script as a SageMaker job would, with Pipe Mode channels",
        description="Runs ENTRY_POINT with the current Python in a job folder laid out like "
        "/opt/ml, feeding each Pipe channel's FIFOs epoch after epoch. Options go before "
        "ENTRY_POINT; what follows it is passed to the script.",
    )
    train.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="NAME=SOURCE",
        help="a channel from a local file, a local folder or s3://bucket/prefix (repeatable)",
    )
    train.add_argument(
        "--input-data-config",
        type=Path,
        metavar="FILE",
        help="channels as the CreateTrainingJob API's InputDataConfig JSON",
    )
    train.add_argument(
        "--input-mode",
        default="Pipe",
        choices=["Pipe", "File", "FastFile"],
        help="for --channel channels and InputDataConfig entries without InputMode",
    )
    train.add_argument(
        "--hyperparameter",
        action="append",
        default=[],
        type=_key_value,
        metavar="K=V",
        help="passed to the script as --K V and written to hyperparameters.json (repeatable)",
    )
    train.add_argument("--output-path", type=Path, default=Path("pipemode-output"))
    train.add_argument("--job-name", help="default: the script's name and a timestamp")
    train.add_argument("--instance-count", type=int, default=1, help="hosts algo-1..algo-N")
    train.add_argument("entry_point", type=Path, metavar="ENTRY_POINT")
    train.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS")


def _add_generate(commands: argparse._SubParsersAction) -> None:
    from pipemode.generate import add_arguments

    generate = commands.add_parser(
        "generate",
        help="write the Pipe Mode tutorial's synthetic data set",
        description="Writes records of tf.train.Example with `data` (DIMENSION float64 drawn "
        "around a class-specific mean) and `labels` (int64), as the SageMaker tutorial's data.",
    )
    add_arguments(generate)


def _add_demo(commands: argparse._SubParsersAction) -> None:
    from pipemode.demo import add_arguments

    demo = commands.add_parser(
        "demo",
        help="generate the tutorial's data and train the example through local Pipe Mode",
    )
    add_arguments(demo)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pipemode", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    _add_train(commands)
    _add_generate(commands)
    _add_demo(commands)
    return root


def _train(args: argparse.Namespace) -> int:
    from pipemode.runner import TrainingJob
    from pipemode.runner.channels import parse_channel_arg, parse_input_data_config

    channels = [parse_channel_arg(text, args.input_mode) for text in args.channel]
    if args.input_data_config is not None:
        try:
            config = json.loads(args.input_data_config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise PipeModeError(f"cannot read {args.input_data_config}: {error}") from None
        channels += parse_input_data_config(config, args.input_mode)
    job = TrainingJob(
        entry_point=args.entry_point,
        channels=channels,
        hyperparameters=dict(args.hyperparameter),
        script_args=args.script_args,
        output_path=args.output_path,
        job_name=args.job_name,
        instance_count=args.instance_count,
    )
    return job.run().exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "generate":
            from pipemode.generate import run

            return run(args)
        from pipemode.demo import run as run_demo

        return run_demo(args)
    except (PipeModeError, OSError) as error:
        # Bad options, sources or files: a message to act on, not a traceback.
        print(f"pipemode {args.command}: error: {error}", file=sys.stderr)
        return 2
