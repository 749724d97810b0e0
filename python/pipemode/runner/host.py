"""One host of a local training job: its `/opt/ml` folder, and the config files and SM_*
environment its script is given, built without reading or writing anything (so that what a
host sees can be tested, and built for several hosts, on its own)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipemode.runner.channels import Channel
from pipemode.runner.distribution import Distribution

__all__ = ["HostConfig", "HostFolder", "JobSpec", "host_config", "script_args"]


class JobSpec(Protocol):
    """What a host's configuration is built from (a `TrainingJob` is one)."""

    @property
    def entry_point(self) -> str | os.PathLike[str]: ...
    @property
    def channels(self) -> Sequence[Channel]: ...
    @property
    def hyperparameters(self) -> Mapping[str, str]: ...
    @property
    def script_args(self) -> Sequence[str]: ...
    @property
    def distribution(self) -> Distribution | None: ...


@dataclass(frozen=True)
class HostFolder:
    """One host's `/opt/ml`."""

    root: Path

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def config_dir(self) -> Path:
        return self.input_dir / "config"

    @property
    def data_dir(self) -> Path:
        return self.input_dir / "data"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    def create(self) -> None:
        for folder in (self.config_dir, self.model_dir, self.output_data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # The FIFOs live here: only the job's own user may open them.
        self.data_dir.mkdir(mode=0o700)
        self.data_dir.chmod(0o700)

    def remove_input_data(self) -> None:
        """Removes FIFOs left behind and File-mode copies: the job's inputs are transient."""
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)


@dataclass(frozen=True)
class HostConfig:
    """What one host's script is given: its config files (name to JSON content, written under
    `input/config`) and the SM_* variables of the SageMaker training toolkit."""

    files: dict[str, Any]
    environment: dict[str, str]


# Every host is in one instance group, named as SageMaker names a homogeneous cluster's.
GROUP = "homogeneousCluster"
INSTANCE_TYPE = "local"


def host_config(
    job: JobSpec, job_name: str, hosts: Sequence[str], host: str, folder: HostFolder
) -> HostConfig:
    """Builds one host's configuration from the job alone: it reads and writes nothing."""
    channels = sorted(c.name for c in job.channels)
    input_config = {c.name: c.container_config() for c in job.channels}
    resource = {
        "current_host": host,
        "current_instance_type": INSTANCE_TYPE,
        "current_group_name": GROUP,
        "hosts": list(hosts),
        "instance_groups": [_instance_group(hosts)],
        "network_interface_name": "lo",
    }
    framework_params = job.distribution.framework_params() if job.distribution else {}
    num_cpus = os.cpu_count() or 1
    entry_point = Path(job.entry_point).name
    training_env = {
        **_cluster_training_env(hosts, host, framework_params),
        "channel_input_dirs": {c: str(folder.data_dir / c) for c in channels},
        "current_host": host,
        "hosts": list(hosts),
        "hyperparameters": job.hyperparameters,
        "input_config_dir": str(folder.config_dir),
        "input_data_config": input_config,
        "input_dir": str(folder.input_dir),
        "job_name": job_name,
        "model_dir": str(folder.model_dir),
        "network_interface_name": resource["network_interface_name"],
        "num_cpus": num_cpus,
        "num_gpus": 0,
        "output_data_dir": str(folder.output_data_dir),
        "output_dir": str(folder.output_dir),
        "resource_config": resource,
        "user_entry_point": entry_point,
    }
    env = {
        "SAGEMAKER_BASE_DIR": str(folder.root),
        "TRAINING_JOB_NAME": job_name,
        "SM_CHANNELS": json.dumps(channels),
        "SM_INPUT_DATA_CONFIG": json.dumps(input_config),
        "SM_INPUT_DIR": str(folder.input_dir),
        "SM_INPUT_CONFIG_DIR": str(folder.config_dir),
        "SM_MODEL_DIR": str(folder.model_dir),
        "SM_OUTPUT_DIR": str(folder.output_dir),
        "SM_OUTPUT_DATA_DIR": str(folder.output_data_dir),
        "SM_HPS": json.dumps(job.hyperparameters),
        "SM_HOSTS": json.dumps(list(hosts)),
        "SM_CURRENT_HOST": host,
        "SM_NETWORK_INTERFACE_NAME": str(resource["network_interface_name"]),
        "SM_RESOURCE_CONFIG": json.dumps(resource),
        "SM_NUM_CPUS": str(num_cpus),
        "SM_NUM_GPUS": "0",
        "SM_USER_ENTRY_POINT": entry_point,
        "SM_USER_ARGS": json.dumps(script_args(job)),
        "SM_TRAINING_ENV": json.dumps(training_env),
        **_cluster_env(hosts, framework_params),
    }
    for name in channels:
        env[f"SM_CHANNEL_{name.upper()}"] = str(folder.data_dir / name)
    for key, value in job.hyperparameters.items():
        env[f"SM_HP_{key.upper()}"] = value
    # The SDK sends its sagemaker_* switches as hyperparameters, JSON-encoded; the toolkit
    # takes them out of the script's arguments and SM_HPS again.
    hyperparameters = dict(job.hyperparameters)
    hyperparameters.update({k: json.dumps(v) for k, v in framework_params.items()})
    files = {
        "hyperparameters.json": hyperparameters,
        "inputdataconfig.json": input_config,
        "resourceconfig.json": resource,
    }
    return HostConfig(files, env)


def _instance_group(hosts: Sequence[str]) -> dict[str, Any]:
    return {"instance_group_name": GROUP, "instance_type": INSTANCE_TYPE, "hosts": list(hosts)}


def _distribution_groups(framework_params: Mapping[str, Any]) -> list[str]:
    # The toolkit counts a group as distributed when a strategy is enabled on it.
    return [GROUP] if framework_params else []


def _cluster_training_env(
    hosts: Sequence[str], host: str, framework_params: Mapping[str, Any]
) -> dict[str, Any]:
    """The training toolkit's view of the cluster, in SM_TRAINING_ENV."""
    distribution_groups = _distribution_groups(framework_params)
    return {
        "additional_framework_parameters": dict(framework_params),
        "current_instance_group": GROUP,
        "current_instance_group_hosts": list(hosts),
        "current_instance_type": INSTANCE_TYPE,
        "distribution_hosts": list(hosts) if distribution_groups else [],
        "distribution_instance_groups": distribution_groups,
        "instance_groups": [GROUP],
        "instance_groups_dict": {GROUP: _instance_group(hosts)},
        "is_hetero": False,
        "is_master": host == hosts[0],
        "master_hostname": hosts[0],
    }


def _cluster_env(hosts: Sequence[str], framework_params: Mapping[str, Any]) -> dict[str, str]:
    """The same as SM_* variables, JSON as the toolkit's mapping.to_env_vars writes it."""
    return {
        "SM_FRAMEWORK_PARAMS": _toolkit_json(framework_params),
        "SM_CURRENT_INSTANCE_TYPE": INSTANCE_TYPE,
        "SM_CURRENT_INSTANCE_GROUP": GROUP,
        "SM_CURRENT_INSTANCE_GROUP_HOSTS": _toolkit_json(list(hosts)),
        "SM_INSTANCE_GROUPS": _toolkit_json([GROUP]),
        "SM_INSTANCE_GROUPS_DICT": _toolkit_json({GROUP: _instance_group(hosts)}),
        "SM_DISTRIBUTION_INSTANCE_GROUPS": _toolkit_json(_distribution_groups(framework_params)),
        "SM_IS_HETERO": _toolkit_json(False),
    }


def _toolkit_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def script_args(job: JobSpec) -> list[str]:
    """Hyperparameters as `--name value`, as SageMaker script mode passes them, then the rest."""
    args = []
    for key, value in job.hyperparameters.items():
        args += [f"--{key}", value]
    return args + list(job.script_args)
