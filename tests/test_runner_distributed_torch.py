"""torch_distributed over 2 hosts on loopback: each host's script gets torchrun's variables, and
gloo (CPU) collectives run between the hosts."""

from __future__ import annotations

import tarfile
import time
from pathlib import Path

import pytest
from pipemode.runner.distribution import LOOPBACK, Distribution
from runner_helpers import recorded, run, script

pytest.importorskip("torch")

pytestmark = pytest.mark.slow

_GLOO = """
import torch
import torch.distributed as dist
if os.environ["RANK"] == os.environ.get("FAIL_RANK"):
    sys.exit(4)  # before joining: its peer waits for it in init_process_group
dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
names = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]
record("ddp.json", {"env": {n: os.environ[n] for n in names}, "sum": float(total),
                    "rank": dist.get_rank(), "world": dist.get_world_size()})
dist.destroy_process_group()
"""


def test_torch_distributed_hosts_all_reduce_over_gloo(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        script(tmp_path, _GLOO),
        [],
        instance_count=2,
        distribution=Distribution("torch_distributed"),
    )
    assert result.exit_code == 0, result.failure
    first, second = (recorded(result.job_dir, "ddp.json", h) for h in ("algo-1", "algo-2"))
    assert first["sum"] == second["sum"] == 3.0  # ranks 0 and 1 contributed 1 and 2
    assert (first["rank"], second["rank"]) == (0, 1)
    assert first["world"] == second["world"] == 2
    assert first["env"]["MASTER_PORT"] == second["env"]["MASTER_PORT"]
    assert first["env"]["MASTER_ADDR"] == LOOPBACK
    assert [first["env"]["RANK"], second["env"]["RANK"]] == ["0", "1"]
    assert first["env"]["LOCAL_RANK"] == second["env"]["LOCAL_RANK"] == "0"


def test_a_torch_host_failing_ends_the_job_naming_it(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run(
        tmp_path,
        script(tmp_path, _GLOO),
        [],
        instance_count=2,
        distribution=Distribution("torch_distributed"),
        environment={"FAIL_RANK": "1"},
        stop_grace=60,
    )
    assert time.monotonic() - started < 40  # algo-1 was waiting for it in the rendezvous
    assert result.exit_code == 4
    assert (result.failure or "").startswith("AlgorithmError: train.py on algo-2 exited with")


def test_the_ddp_example_trains_on_two_hosts_in_sync(tmp_path: Path) -> None:
    pytest.importorskip("pipemode.torch")  # the example reads with pipemode's torch dataset
    from pipemode.generate import generate
    from pipemode.runner import Channel, TrainingJob

    generate(tmp_path / "data" / "train", 2560, files=4, seed=0)
    generate(tmp_path / "data" / "eval", 640, files=1, seed=1)
    example = Path(__file__).parents[1] / "examples" / "ddp_torch.py"
    job = TrainingJob(
        example,
        [
            Channel("train", str(tmp_path / "data" / "train"), distribution="ShardedByS3Key"),
            Channel("eval", str(tmp_path / "data" / "eval")),
        ],
        hyperparameters={"epochs": "2", "steps": "10"},
        output_path=tmp_path / "out",
        job_name="ddp",
        instance_count=2,
        distribution=Distribution("torch_distributed"),
    )
    result = job.run(live=False)
    assert result.exit_code == 0, result.failure
    metrics = recorded(result.job_dir, "metrics.json")
    assert metrics["hosts"] == 2 and metrics["train_steps"] == 20
    assert metrics["weights_in_sync"] is True
    assert metrics["eval_accuracy"] > 0.95
    with tarfile.open(result.model_data) as tar:
        assert tar.getnames() == ["model.pth"]
