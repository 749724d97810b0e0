"""A local stand-in for the SageMaker SDK's Estimator and TrainingInput.

The same `fit({"train": ..., "eval": ...})` call that starts a job on SageMaker runs it here,
through the local runner, Pipe Mode included (which the SDK's own local mode does not support).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from pipemode.errors import JobConfigError
from pipemode.runner.channels import Channel
from pipemode.runner.distribution import parse_distribution
from pipemode.runner.job import DEFAULT_OUTPUT_PATH, JobResult, TrainingJob, default_job_name
from pipemode.runner.processes import DEFAULT_STOP_GRACE

__all__ = ["Estimator", "ShuffleConfig", "TrainingFailedError", "TrainingInput"]


class TrainingFailedError(RuntimeError):
    """The training script failed; `result` holds its exit code and failure reason."""

    def __init__(self, result: JobResult) -> None:
        super().__init__(
            f"training job {result.job_name} failed with exit code {result.exit_code}: "
            f"{(result.failure or '').splitlines()[0] if result.failure else 'no reason given'}"
        )
        self.result = result


@dataclass(frozen=True)
class ShuffleConfig:
    """As `sagemaker.inputs.ShuffleConfig`: the object order is reshuffled every epoch."""

    seed: int


@dataclass(frozen=True)
class TrainingInput:
    """As `sagemaker.inputs.TrainingInput`; `s3_data` may also be a local file or folder."""

    s3_data: str
    distribution: str | None = None
    compression: str | None = None
    content_type: str | None = None
    record_wrapping: str | None = None
    s3_data_type: str = "S3Prefix"
    input_mode: str | None = None
    shuffle_config: ShuffleConfig | None = None
    # With s3_data_type="AugmentedManifestFile": the attributes streamed for each line.
    attribute_names: list[str] | None = None

    def channel(self, name: str, default_input_mode: str) -> Channel:
        return Channel.with_options(
            name,
            os.fspath(self.s3_data),
            input_mode=self.input_mode or default_input_mode,
            s3_data_type=self.s3_data_type,
            distribution=self.distribution,
            record_wrapping=self.record_wrapping,
            compression=self.compression,
            shuffle_seed=self.shuffle_config.seed if self.shuffle_config else None,
            content_type=self.content_type,
            attribute_names=self.attribute_names,
        )


Input = Union[str, os.PathLike, TrainingInput]


class Estimator:
    """Runs `entry_point` as a SageMaker training job would, on this machine.

    >>> estimator = Estimator("train.py", hyperparameters={"steps": 100}, input_mode="Pipe")
    >>> estimator.fit({"train": "data/train", "eval": TrainingInput("s3://bucket/eval")})

    `distribution=` takes the SDK's dict for `multi_worker_mirrored_strategy` or
    `torch_distributed` (`{"torch_distributed": {"enabled": True}}`) with `instance_count` hosts.
    """

    def __init__(
        self,
        entry_point: str | os.PathLike[str],
        *,
        hyperparameters: dict[str, Any] | None = None,
        input_mode: str = "Pipe",
        output_path: str | os.PathLike[str] = DEFAULT_OUTPUT_PATH,
        instance_count: int = 1,
        base_job_name: str | None = None,
        environment: dict[str, str] | None = None,
        script_args: list[str] | None = None,
        stop_grace: float = DEFAULT_STOP_GRACE,
        distribution: dict[str, Any] | None = None,
    ) -> None:
        self.entry_point = Path(entry_point)
        self.hyperparameters = dict(hyperparameters or {})
        self.input_mode = input_mode
        self.output_path = Path(output_path)
        self.instance_count = instance_count
        self.base_job_name = base_job_name
        self.environment = dict(environment or {})
        self.script_args = list(script_args or [])
        # Seconds a stopping job's scripts get between SIGTERM and SIGKILL (SageMaker: 120).
        self.stop_grace = stop_grace
        # The SDK's dict, e.g. {"multi_worker_mirrored_strategy": {"enabled": True}}; checked
        # here, as the SDK checks it when the estimator is made.
        self.distribution = parse_distribution(distribution)
        self.latest_job: JobResult | None = None

    @property
    def model_data(self) -> Path | None:
        """The latest job's model.tar.gz, as `estimator.model_data` on SageMaker."""
        return self.latest_job.model_data if self.latest_job else None

    def channels(self, inputs: Input | dict[str, Input] | None) -> list[Channel]:
        # As in the SDK, a lone input is the channel "training".
        if inputs is None:
            return []
        if not isinstance(inputs, dict):
            inputs = {"training": inputs}
        channels = []
        for name, value in inputs.items():
            if not isinstance(value, TrainingInput):
                value = TrainingInput(os.fspath(value))
            channels.append(value.channel(name, self.input_mode))
        return channels

    def fit(
        self,
        inputs: Input | dict[str, Input] | None = None,
        *,
        job_name: str | None = None,
        live: bool | None = None,
    ) -> JobResult:
        """Runs the job; raises TrainingFailedError if the script fails, as the SDK does."""
        if job_name is None and self.base_job_name:
            job_name = default_job_name(self.base_job_name)
        job = TrainingJob(
            entry_point=self.entry_point,
            channels=self.channels(inputs),
            hyperparameters={k: _hyperparameter(v) for k, v in self.hyperparameters.items()},
            script_args=self.script_args,
            output_path=self.output_path,
            job_name=job_name,
            instance_count=self.instance_count,
            environment=self.environment,
            stop_grace=self.stop_grace,
            distribution=self.distribution,
        )
        self.latest_job = job.run(live=live)
        if not self.latest_job.succeeded:
            raise TrainingFailedError(self.latest_job)
        return self.latest_job


def _hyperparameter(value: Any) -> str:
    """hyperparameters.json holds strings: a str as it is, anything else as JSON (True -> true)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        raise JobConfigError(f"hyperparameter value {value!r} is not JSON-serialisable") from None
