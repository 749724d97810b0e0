"""The `pipemode` command: `train` a script through local Pipe Mode, `generate` the tutorial's
data, and `demo` both end to end."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipemode import __version__ as native_version
from pipemode.errors import PipeModeError
from pipemode.runner.job import DEFAULT_OUTPUT_PATH
from pipemode.runner.processes import DEFAULT_STOP_GRACE

__all__ = ["main", "non_negative_int", "parser", "positive_int", "version"]

_FORMATS = ["RecordIO", "TFRecord"]


def version() -> str:
    """The installed distribution's version; the native module's when run from a source tree
    that was built but not installed."""
    try:
        return importlib.metadata.version("pipemode")
    except importlib.metadata.PackageNotFoundError:
        return native_version


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be at least 0, not {text}")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _command(
    commands: argparse._SubParsersAction, name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=summary,
        description=description,
        formatter_class=_HelpFormatter,
    )


def _add_output_path(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--output-path",
        type=Path,
        default=DEFAULT_OUTPUT_PATH,
        metavar="FOLDER",
        help="where the job folder <job-name>/ is made, with the model and any failure under "
        "<job-name>/output/; relative to the current folder",
    )


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = _command(
        commands,
        "train",
        "run a training script as a SageMaker job would, with Pipe Mode channels",
        "Runs ENTRY_POINT with the current Python in a job folder laid out like /opt/ml, feeding "
        "each Pipe channel's FIFOs epoch after epoch. Options go before ENTRY_POINT; what "
        "follows it is passed to the script.",
    )
    train.usage = "%(prog)s [options] ENTRY_POINT [SCRIPT_ARGS ...]"
    train.add_argument(
        "--channel",
        action="append",
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
        help="for --channel channels and InputDataConfig entries without InputMode. File copies "
        "the channel into input/data/<name>/ before the script starts; FastFile does the same "
        'here and is written "File" in inputdataconfig.json, as SageMaker writes it',
    )
    train.add_argument(
        "--hyperparameter",
        action="append",
        type=_key_value,
        metavar="K=V",
        help="passed to the script as --K V and written to hyperparameters.json (repeatable)",
    )
    _add_output_path(train)
    train.add_argument(
        "--job-name", metavar="NAME", help="the job folder's name; default: script-timestamp"
    )
    train.add_argument(
        "--instance-count", type=positive_int, default=1, help="run hosts algo-1..algo-N"
    )
    train.add_argument(
        "--distribution",
        metavar="STRATEGY",
        help="set up SageMaker's distributed training on every host, as the framework "
        "containers do: multi_worker_mirrored_strategy (TF_CONFIG) or torch_distributed "
        "(torchrun). Hosts talk over loopback, each on a free port",
    )
    train.add_argument(
        "--stop-grace",
        type=_seconds,
        default=DEFAULT_STOP_GRACE,
        metavar="SECONDS",
        help="when a script or channel fails, or on Ctrl-C, every host's processes get SIGTERM "
        "(Ctrl-C: SIGINT), then SIGKILL after this long, as SageMaker stops a job; so does "
        "whatever a script leaves running when it exits. A second Ctrl-C kills at once",
    )
    train.add_argument(
        "entry_point",
        type=Path,
        nargs="?",
        default=None,  # checked in main, for a message that names it
        metavar="ENTRY_POINT",
        help="the training script",
    )
    train.add_argument(
        "script_args", nargs=argparse.REMAINDER, metavar="SCRIPT_ARGS", help="passed to the script"
    )
    train.set_defaults(command_parser=train)


def _add_generate(commands: argparse._SubParsersAction) -> None:
    generate = _command(
        commands,
        "generate",
        "write the Pipe Mode tutorial's synthetic data set",
        "Writes records of tf.train.Example with `data` (DIMENSION float64 drawn around a "
        "class-specific mean) and `labels` (int64), as the SageMaker tutorial's data, in FILES "
        "files named part-NNNNN.recordio or .tfrecord.",
    )
    generate.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="made if missing")
    generate.add_argument(
        "--records", type=non_negative_int, default=10_000, help="records to write"
    )
    generate.add_argument(
        "--dimension", type=positive_int, default=1024, help="float64 values per record"
    )
    generate.add_argument("--classes", type=positive_int, default=2, help="classes (label values)")
    generate.add_argument(
        "--format",
        dest="record_format",
        choices=_FORMATS,
        default="RecordIO",
        help="record framing",
    )
    generate.add_argument(
        "--files", type=positive_int, default=1, help="files to split the records over"
    )
    generate.add_argument("--seed", type=int, default=0, help="seed of the random values")
    generate.add_argument(
        "--images",
        action="store_true",
        help="write RECORDS JPEG images under OUT_DIR/images/ and the augmented manifest "
        "OUT_DIR/train.manifest labelling them (source-ref, class) instead; needs Pillow: "
        "pip install 'pipemode[images]'",
    )
    generate.add_argument(
        "--image-size", type=positive_int, default=32, help="with --images: pixels per side"
    )
    generate.add_argument(
        "--ref-prefix",
        default="",
        metavar="PREFIX",
        help="with --images: put before each source-ref, e.g. s3://bucket/train/ for the files "
        "uploaded there (default: paths relative to the manifest, for a local job)",
    )


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = _command(
        commands,
        "demo",
        "generate the tutorial's data and train the example through local Pipe Mode",
        "The SageMaker Pipe Mode tutorial on this machine: generates its synthetic train and "
        "eval channels, trains its Keras script through the local runner on Pipe channels and "
        "prints the eval accuracy and the input throughput. Needs TensorFlow. The defaults take "
        "about a minute on two cores.",
    )
    # At least 1 of each: records per second divide by the train records, and the tutorial
    # evaluates the model on the eval channel.
    demo.add_argument("--train-records", type=positive_int, default=20_000, help="generated")
    demo.add_argument("--eval-records", type=positive_int, default=4_000, help="generated")
    demo.add_argument("--epochs", type=positive_int, default=5, help="training epochs")
    demo.add_argument("--steps", type=positive_int, default=300, help="training steps per epoch")
    demo.add_argument(
        "--dense",
        action="store_true",
        help="decode the Examples in Rust (PipeModeDataset(features=...)) instead of in TF",
    )
    _add_output_path(demo)
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated data")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pipemode", description=__doc__)
    root.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_generate(commands)
    _add_demo(commands)
    return root


def _train(args: argparse.Namespace) -> int:
    from pipemode.runner import TrainingJob
    from pipemode.runner.channels import parse_channel_arg, parse_input_data_config
    from pipemode.runner.distribution import parse_distribution

    channels = [parse_channel_arg(text, args.input_mode) for text in args.channel or []]
    if args.input_data_config is not None:
        try:
            config = json.loads(args.input_data_config.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise PipeModeError(f"cannot read {args.input_data_config}: {error}") from None
        channels += parse_input_data_config(config, args.input_mode)
    _check_script_args(args, has_channels=bool(channels))
    job = TrainingJob(
        entry_point=args.entry_point,
        channels=channels,
        hyperparameters=dict(args.hyperparameter or []),
        script_args=args.script_args,
        output_path=args.output_path,
        job_name=args.job_name,
        instance_count=args.instance_count,
        stop_grace=args.stop_grace,
        distribution=parse_distribution(args.distribution),
    )
    return job.run().exit_code


# Runner options that, written after ENTRY_POINT, leave the job without its channels.
_CHANNEL_OPTIONS = ("--channel", "--input-data-config")


def _check_script_args(args: argparse.Namespace, has_channels: bool) -> None:
    """What follows ENTRY_POINT is the script's, but a runner option there is most likely
    misplaced: an error when the job would then have no channels, else a warning."""
    runner_options = {
        option
        for action in args.command_parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    misplaced = [a for a in args.script_args if a.partition("=")[0] in runner_options]
    if not misplaced:
        return
    where = (
        f"{', '.join(misplaced)} after the entry point {args.entry_point} "
        "go to the script, not to the runner; write runner options before ENTRY_POINT"
    )
    if not has_channels and any(a.partition("=")[0] in _CHANNEL_OPTIONS for a in misplaced):
        raise PipeModeError(f"the job has no channels: {where}")
    print(f"pipemode train: warning: {where}", file=sys.stderr)


def _generate(args: argparse.Namespace) -> int:
    if args.images:
        return _generate_images(args)
    from pipemode.generate import generate

    result = generate(
        args.out_dir,
        args.records,
        dimension=args.dimension,
        classes=args.classes,
        record_format=args.record_format,
        files=args.files,
        seed=args.seed,
    )
    print(
        f"pipemode generate: {result.records} {args.record_format} records "
        f"({result.bytes / 1e6:.1f} MB of Examples) in {len(result.files)} file(s) under "
        f"{args.out_dir}, {result.seconds:.2f} s, {result.megabytes_per_second:.0f} MB/s",
        file=sys.stderr,
    )
    return 0


def _generate_images(args: argparse.Namespace) -> int:
    from pipemode.generate import generate_images

    try:
        result = generate_images(
            args.out_dir,
            args.records,
            classes=args.classes,
            size=args.image_size,
            seed=args.seed,
            ref_prefix=args.ref_prefix,
        )
    except ImportError as missing:  # Pillow, an optional extra: a message, not a traceback
        raise PipeModeError(str(missing)) from None
    print(
        f"pipemode generate: {result.records} JPEG images ({result.bytes / 1e6:.1f} MB) under "
        f"{args.out_dir}/images, labelled by the augmented manifest {result.files[0]}, "
        f"{result.seconds:.2f} s",
        file=sys.stderr,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pipemode.demo import run_demo

    return run_demo(
        train_records=args.train_records,
        eval_records=args.eval_records,
        epochs=args.epochs,
        steps=args.steps,
        dense=args.dense,
        output_path=args.output_path,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "train" and args.entry_point is None:
        args.command_parser.error("the training script ENTRY_POINT is required")
    commands = {"train": _train, "generate": _generate, "demo": _demo}
    try:
        return commands[args.command](args)
    except (PipeModeError, OSError) as error:
        # Bad options, sources or files: a message to act on, not a traceback.
        print(f"pipemode {args.command}: error: {error}", file=sys.stderr)
        return 2
