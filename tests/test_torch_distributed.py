"""pipemode.torch.PipeModeDataset under a real torchrun: two local ranks share one channel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_torch import ServedJob, some_records

pytest.importorskip("torch")
pytestmark = [pytest.mark.torch, pytest.mark.slow]

# Each rank reads two epochs with local_ranks="deal", then the ranks add up what they read
# over gloo, as a DDP job's ranks would meet in their collectives.
_SCRIPT = """
import json, os, pathlib
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from pipemode.torch import PipeModeDataset

dist.init_process_group("gloo")
dirs = json.loads(os.environ["PIPEMODE_TEST_DIRS"])
dataset = PipeModeDataset("train", local_ranks="deal", batch_size=10, **dirs)
loader = DataLoader(dataset, batch_size=10, num_workers=int(os.environ["WORKERS"]), collate_fn=list)
epochs = [[record.decode() for batch in loader for record in batch] for _ in range(2)]
counts = torch.tensor([len(epoch) for epoch in epochs])
dist.all_reduce(counts)
rank = dist.get_rank()
out = pathlib.Path(os.environ["PIPEMODE_TEST_OUT"]) / f"rank-{rank}.json"
out.write_text(json.dumps({"local_rank": os.environ["LOCAL_RANK"], "epochs": epochs,
                           "totals": counts.tolist()}))
dist.destroy_process_group()
"""


@pytest.fixture
def job(tmp_path: Path) -> Iterator[ServedJob]:
    served = ServedJob(tmp_path)
    yield served
    served.stop()


@pytest.mark.parametrize("workers", [0, 2])
def test_torchrun_ranks_share_a_channel_dealt_by_local_rank_zero(
    job: ServedJob, tmp_path: Path, workers: int
) -> None:
    records = some_records(1000)
    job.serve("train", [records[:400], records[400:]])
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "PIPEMODE_TEST_DIRS": json.dumps(job.dirs()),
        "PIPEMODE_TEST_OUT": str(out),
        "WORKERS": str(workers),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", str(script)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    runs = [[r.decode() for r in records[start : start + 10]] for start in range(0, 1000, 10)]
    for rank in range(2):
        read = json.loads((out / f"rank-{rank}.json").read_text())
        assert read["local_rank"] == str(rank)
        expected = [r for run in runs[rank::2] for r in run]
        assert read["epochs"] == [expected, expected]
        assert read["totals"] == [1000, 1000]
    assert job.next_epoch("train") == 2
