"""SageMaker's distributed training, as the framework containers set it up on each host.

The SDK's `distribution=` reaches a container as `sagemaker_*` hyperparameters (exported as
`SM_FRAMEWORK_PARAMS`), from which the container's toolkit sets up each host before it runs the
script:

- `multi_worker_mirrored_strategy` (sagemaker-tensorflow-training-toolkit, `training.py`):
  `TF_CONFIG` names every host as a `worker` on port 8890 and this host's index among them.
- `torch_distributed` (sagemaker-training-toolkit, `torch_distributed.py`): the script runs under
  `torchrun --nnodes N --nproc_per_node P --master_addr algo-1 --master_port 7777 --node_rank i`,
  which gives each process `RANK`, `LOCAL_RANK`, `WORLD_SIZE`; the PyTorch toolkit also exports
  `MASTER_ADDR` and `MASTER_PORT` to every host.

Here every host is a process group on one machine, where `algo-1..N` do not resolve: each host's
address is loopback with a free port of its own, picked when the job starts, in place of
`algo-N:8890` or `algo-1:7777`. With one process per host (a CPU instance's), torchrun would run
the script once with the variables below; the runner sets them itself and runs the script as its
host's process group leader, because torchrun starts its workers in sessions of their own, out
of reach of the group signals that end a job. The other strategies the SDK knows are refused (see
`_REFUSED`).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipemode.errors import JobConfigError

__all__ = [
    "LOOPBACK",
    "SUPPORTED",
    "Distribution",
    "HostAddresses",
    "parse_distribution",
]

LOOPBACK = "127.0.0.1"

MWMS = "multi_worker_mirrored_strategy"
TORCH_DISTRIBUTED = "torch_distributed"
SUPPORTED = (MWMS, TORCH_DISTRIBUTED)

# The hyperparameter each supported strategy's `{"enabled": True}` becomes in the SDK
# (sagemaker.estimator.Framework and sagemaker.pytorch.PyTorch).
_SWITCHES = {
    MWMS: "sagemaker_multi_worker_mirrored_strategy_enabled",
    TORCH_DISTRIBUTED: "sagemaker_torch_distributed_enabled",
}
# Processes per host: the toolkit starts one per GPU (or Neuron core), one on a CPU instance.
_PROCESSES_PER_HOST = 1

# What each strategy the SDK has but the runner lacks would take.
_REFUSED = {
    "parameter_server": (
        "each host would also need a TensorFlow ps server process (port 2223) beside its "
        "worker, a TF_CONFIG with master/worker/ps roles, and a job that ends when the master "
        "ends rather than when every host has"
    ),
    "mpi": (
        "it needs Open MPI: the first host's mpirun starts every process of every host "
        "(processes_per_host each) while the other hosts only wait, so each rank would have to "
        "be mapped back to its host's FIFOs"
    ),
    "smdistributed": (
        "AWS's smdistributed libraries ship only in SageMaker's GPU containers and run only on "
        "its multi-GPU instances"
    ),
    "pytorchddp": (
        "it launches through smddprun/mpirun on SageMaker's GPU containers; torch_distributed "
        "runs the same DDP script here"
    ),
    "pytorchxla": "it needs XLA devices (Trainium/GPU) and the torch-xla launcher",
}


def parse_distribution(value: str | Mapping[str, Any] | None) -> Distribution | None:
    """A strategy by its SDK name (the command line) or the SDK's dict (`Estimator`):
    `{"multi_worker_mirrored_strategy": {"enabled": True}}`. None, or nothing enabled: none."""
    if value is None:
        return None
    if isinstance(value, str):
        _check_supported(value)
        return Distribution(value)
    if not isinstance(value, Mapping):
        raise JobConfigError(
            f"distribution must be a dict such as {{{MWMS!r}: {{'enabled': True}}}}, not {value!r}"
        )
    enabled = []
    for name, options in value.items():
        _check_supported(name)
        if not isinstance(options, Mapping) or set(options) - {"enabled"}:
            raise JobConfigError(
                f"distribution {name!r} takes {{'enabled': True}} only, not {options!r}"
            )
        if options.get("enabled", False):
            enabled.append(name)
    if len(enabled) > 1:
        raise JobConfigError(f"distribution enables more than one strategy: {enabled}")
    return Distribution(enabled[0]) if enabled else None


def _check_supported(name: str) -> None:
    if name in SUPPORTED:
        return
    supported = " or ".join(SUPPORTED)
    if name == "instance_groups":
        raise JobConfigError(
            "distribution 'instance_groups' (heterogeneous clusters) is not supported by the "
            "local runner: every host is in one group, homogeneousCluster"
        )
    if name in _REFUSED:
        raise JobConfigError(
            f"distribution {name!r} is not supported by the local runner ({supported} are): "
            f"{_REFUSED[name]}"
        )
    raise JobConfigError(f"unknown distribution {name!r}: the local runner supports {supported}")


@dataclass(frozen=True)
class HostAddresses:
    """Where each host listens for its peers: loopback, and a port of its own."""

    ports: dict[str, int]

    @classmethod
    def pick(cls, hosts: Sequence[str]) -> HostAddresses:
        return cls(dict(zip(hosts, free_ports(len(hosts)))))

    def address(self, host: str) -> str:
        return f"{LOOPBACK}:{self.ports[host]}"


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on loopback now. They are held together while picked, so
    they differ; between now and the script's bind another process could take one, as with
    any port picked ahead (the collective then fails to start and the job with it)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class Distribution:
    """One supported strategy, and what it adds to each host's environment."""

    name: str

    def __post_init__(self) -> None:
        _check_supported(self.name)

    def framework_params(self) -> dict[str, Any]:
        """The `sagemaker_*` hyperparameters the SDK adds (exported as `SM_FRAMEWORK_PARAMS`)."""
        params: dict[str, Any] = {_SWITCHES[self.name]: True}
        if self.name == TORCH_DISTRIBUTED:
            params["sagemaker_instance_type"] = "local"
        return params

    def host_environment(
        self, hosts: Sequence[str], host: str, addresses: HostAddresses
    ) -> dict[str, str]:
        """What the framework container adds to the host's environment."""
        if self.name == MWMS:
            return {"TF_CONFIG": json.dumps(tf_config(hosts, host, addresses))}
        return torchrun_environment(hosts, host, addresses)

    def describe(self, hosts: Sequence[str], addresses: HostAddresses) -> str:
        """Where the hosts meet, for the job's log."""
        if self.name == MWMS:
            where = ", ".join(f"{h} at {addresses.address(h)}" for h in hosts)
            return f"{self.name}: workers {where}"
        ranks = ", ".join(f"{h} RANK {i}" for i, h in enumerate(hosts))
        return f"{self.name}: MASTER_ADDR:MASTER_PORT {addresses.address(hosts[0])}, {ranks}"


def torchrun_environment(
    hosts: Sequence[str], host: str, addresses: HostAddresses
) -> dict[str, str]:
    """What `torchrun --nnodes N --nproc_per_node 1 --master_addr A --master_port P
    --node_rank i` (static rendezvous, no restarts: the toolkit's command) gives its one worker
    on host i. With no torchrun agent, the first host's worker serves the store at MASTER_PORT
    (TORCHELASTIC_USE_AGENT_STORE False), as `init_process_group("env://")` does by itself."""
    node_rank = list(hosts).index(host)
    world_size = len(hosts) * _PROCESSES_PER_HOST
    return {
        "MASTER_ADDR": LOOPBACK,
        "MASTER_PORT": str(addresses.ports[hosts[0]]),
        "WORLD_SIZE": str(world_size),
        "RANK": str(node_rank * _PROCESSES_PER_HOST),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": str(_PROCESSES_PER_HOST),
        "GROUP_RANK": str(node_rank),
        "GROUP_WORLD_SIZE": str(len(hosts)),
        "ROLE_NAME": "default",
        "ROLE_RANK": str(node_rank * _PROCESSES_PER_HOST),
        "ROLE_WORLD_SIZE": str(world_size),
        "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "0",
        "TORCHELASTIC_RUN_ID": "none",
        "TORCHELASTIC_USE_AGENT_STORE": "False",
    }


def tf_config(hosts: Sequence[str], host: str, addresses: HostAddresses) -> dict[str, Any]:
    """The toolkit's `_build_tf_config_for_mwms`, with loopback addresses."""
    return {
        "cluster": {"worker": [addresses.address(h) for h in hosts]},
        "environment": "cloud",
        "task": {"index": list(hosts).index(host), "type": "worker"},
    }
