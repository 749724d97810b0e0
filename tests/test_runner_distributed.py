"""Several hosts with SageMaker's distributed training set up: what each host is given, how the
hosts find each other on loopback, and how a job whose host fails ends. No framework needed
here; TensorFlow's and PyTorch's own runs are in test_runner_distributed_tf/_torch.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pipemode.cli import main
from pipemode.runner import Channel, Estimator, JobConfigError, TrainingJob
from pipemode.runner import job as job_module
from pipemode.runner.distribution import (
    LOOPBACK,
    Distribution,
    HostAddresses,
    parse_distribution,
)
from pipemode.runner.host import HostFolder, host_config
from runner_helpers import folder_of_files, recorded, run, script

MWMS = "multi_worker_mirrored_strategy"
HOSTS = ["algo-1", "algo-2"]


@pytest.mark.parametrize(
    "value",
    [MWMS, {MWMS: {"enabled": True}}, {MWMS: {"enabled": True}, "torch_distributed": {}}],
)
def test_a_strategy_is_named_as_the_sdk_names_it(value: object) -> None:
    assert parse_distribution(value) == Distribution(MWMS)  # type: ignore[arg-type]


def test_a_strategy_not_enabled_is_no_distribution() -> None:
    assert parse_distribution({"torch_distributed": {"enabled": False}}) is None
    assert parse_distribution(None) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"parameter_server": {"enabled": True}}, "'parameter_server' is not supported.*ps server"),
        ({"mpi": {"enabled": True, "processes_per_host": 2}}, "'mpi' is not supported.*mpirun"),
        ({"smdistributed": {"dataparallel": {"enabled": True}}}, "'smdistributed' is not supp"),
        ("pytorchddp", "'pytorchddp' is not supported.*torch_distributed runs"),
        ({MWMS: {"enabled": True}, "instance_groups": ["a"]}, "heterogeneous clusters"),
        ("horovod", "unknown distribution 'horovod'.*supports multi_worker_mirrored_strategy"),
        ({MWMS: {"enabled": True, "custom": 1}}, "takes {'enabled': True} only"),
        ({MWMS: {"enabled": True}, "torch_distributed": {"enabled": True}}, "more than one"),
        (["torch_distributed"], "must be a dict"),
    ],
)
def test_other_strategies_are_refused_saying_why(value: object, message: str) -> None:
    with pytest.raises(JobConfigError, match=message):
        parse_distribution(value)  # type: ignore[arg-type]
    if isinstance(value, dict):  # the estimator checks it when made, as the SDK does
        with pytest.raises(JobConfigError, match=message):
            Estimator("train.py", distribution=value)


def test_each_host_gets_the_toolkits_instance_groups_and_framework_params(
    tmp_path: Path,
) -> None:
    job = TrainingJob(
        tmp_path / "train.py",
        [Channel("train", "x")],
        hyperparameters={"lr": "0.1"},
        distribution=Distribution(MWMS),
    )
    folder = HostFolder(tmp_path / "algo-2")
    config = host_config(job, "job", HOSTS, "algo-2", folder)
    group = {"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": HOSTS}
    resource = config.files["resourceconfig.json"]
    assert resource["instance_groups"] == [group]
    assert resource["current_group_name"] == "homogeneousCluster"
    assert resource["current_instance_type"] == "local"
    # The SDK's switch is a JSON-encoded hyperparameter; the toolkit keeps it from the script.
    switch = "sagemaker_multi_worker_mirrored_strategy_enabled"
    assert config.files["hyperparameters.json"] == {"lr": "0.1", switch: "true"}
    env = config.environment
    assert json.loads(env["SM_FRAMEWORK_PARAMS"]) == {switch: True}
    assert json.loads(env["SM_HPS"]) == {"lr": "0.1"}
    assert json.loads(env["SM_USER_ARGS"]) == ["--lr", "0.1"]
    assert env["SM_CURRENT_INSTANCE_GROUP"] == "homogeneousCluster"
    assert json.loads(env["SM_CURRENT_INSTANCE_GROUP_HOSTS"]) == HOSTS
    assert json.loads(env["SM_INSTANCE_GROUPS"]) == ["homogeneousCluster"]
    assert json.loads(env["SM_INSTANCE_GROUPS_DICT"]) == {"homogeneousCluster": group}
    assert json.loads(env["SM_DISTRIBUTION_INSTANCE_GROUPS"]) == ["homogeneousCluster"]
    assert env["SM_IS_HETERO"] == "false"
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "local"
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["additional_framework_parameters"] == {switch: True}
    assert training_env["master_hostname"] == "algo-1" and not training_env["is_master"]
    plain = host_config(TrainingJob(tmp_path / "t.py", []), "job", HOSTS, "algo-1", folder)
    assert plain.environment["SM_FRAMEWORK_PARAMS"] == "{}"
    assert plain.environment["SM_DISTRIBUTION_INSTANCE_GROUPS"] == "[]"


def test_mwms_tf_config_has_the_toolkits_shape_with_a_loopback_port_per_host() -> None:
    addresses = HostAddresses({"algo-1": 4001, "algo-2": 4002})
    env = Distribution(MWMS).host_environment(HOSTS, "algo-2", addresses)
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"worker": [f"{LOOPBACK}:4001", f"{LOOPBACK}:4002"]},
        "environment": "cloud",
        "task": {"index": 1, "type": "worker"},
    }


def test_torch_distributed_gives_each_host_what_torchrun_gives_its_worker() -> None:
    # torchrun --nnodes 3 --nproc_per_node 1 --master_addr A --master_port 4001 --node_rank 2
    addresses = HostAddresses({"algo-1": 4001, "algo-2": 4002, "algo-3": 4003})
    hosts = [*HOSTS, "algo-3"]
    distribution = Distribution("torch_distributed")
    env = distribution.host_environment(hosts, "algo-3", addresses)
    assert env == {
        "MASTER_ADDR": LOOPBACK,
        "MASTER_PORT": "4001",
        "WORLD_SIZE": "3",
        "RANK": "2",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "GROUP_RANK": "2",
        "GROUP_WORLD_SIZE": "3",
        "ROLE_NAME": "default",
        "ROLE_RANK": "2",
        "ROLE_WORLD_SIZE": "3",
        "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "0",
        "TORCHELASTIC_RUN_ID": "none",
        "TORCHELASTIC_USE_AGENT_STORE": "False",
    }
    assert distribution.framework_params() == {
        "sagemaker_torch_distributed_enabled": True,
        "sagemaker_instance_type": "local",
    }


# Each host listens on its own address from TF_CONFIG and reaches every other host's: the
# addresses a collective would use work, and each is this host's alone.
_PEERS = """
import socket
config = json.loads(os.environ["TF_CONFIG"])
workers, index = config["cluster"]["worker"], config["task"]["index"]
host, port = workers[index].rsplit(":", 1)
server = socket.create_server((host, int(port)))
heard = []
for i, peer in enumerate(workers):
    if i == index:
        continue
    address, peer_port = peer.rsplit(":", 1)
    for _ in range(500):
        try:
            socket.create_connection((address, int(peer_port))).sendall(str(index).encode())
            break
        except ConnectionRefusedError:
            time.sleep(0.01)
for _ in range(len(workers) - 1):
    connection, _ = server.accept()
    heard.append(int(connection.recv(16)))
record("peers.json", {"config": config, "heard": sorted(heard),
                      "framework": json.loads(os.environ["SM_FRAMEWORK_PARAMS"]),
                      "argv": sys.argv[1:]})
"""


def test_hosts_reach_each_other_at_the_addresses_in_tf_config(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        script(tmp_path, _PEERS),
        [],
        instance_count=3,
        distribution=Distribution(MWMS),
        hyperparameters={"epochs": "2"},
    )
    assert result.exit_code == 0, result.failure
    seen = [recorded(result.job_dir, "peers.json", f"algo-{i}") for i in (1, 2, 3)]
    workers = seen[0]["config"]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith(f"{LOOPBACK}:") for w in workers)
    for index, host_seen in enumerate(seen):
        assert host_seen["config"]["cluster"]["worker"] == workers
        assert host_seen["config"]["task"] == {"index": index, "type": "worker"}
        assert host_seen["heard"] == [i for i in range(3) if i != index]
        assert host_seen["framework"] == {"sagemaker_multi_worker_mirrored_strategy_enabled": True}
        assert host_seen["argv"] == ["--epochs", "2"]


# algo-2 fails; algo-1 stands for a worker in a collective with it, which would wait forever,
# and catches SIGTERM as TensorFlow's MultiWorkerMirroredStrategy does (a preemption notice).
_ONE_HOST_FAILS = """
import signal
if os.environ["SM_CURRENT_HOST"] == "algo-2":
    time.sleep(0.5)
    print("algo-2 lost its GPU", file=sys.stderr)
    sys.exit(3)
signal.signal(signal.SIGTERM, lambda *_: print("preempted? carrying on", file=sys.stderr))
while True:
    time.sleep(1)
"""


def test_when_one_host_fails_the_others_are_ended_and_the_job_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_module, "PEER_FAILURE_GRACE", 1.0)
    started = time.monotonic()
    result = run(
        tmp_path,
        script(tmp_path, _ONE_HOST_FAILS),
        [],
        instance_count=2,
        distribution=Distribution(MWMS),
        stop_grace=30,
    )
    # Killed after the short grace for a failed peer's hosts, not the whole stop grace.
    assert time.monotonic() - started < 15
    assert result.exit_code == 3
    failure = (result.job_dir / "output" / "failure").read_text()
    assert failure.startswith("AlgorithmError: train.py on algo-2 exited with code 3\n")
    assert "algo-2: algo-2 lost its GPU" in failure


# algo-2 crashes; algo-1, whose connection to it breaks, fails a moment later: both exit
# between two of the runner's polls, and the first to exit is the cause.
_PEER_FAILS_FIRST = """
import socket
config = json.loads(os.environ["TF_CONFIG"])
address, port = config["cluster"]["worker"][0].rsplit(":", 1)
if config["task"]["index"] == 0:
    connection, _ = socket.create_server((address, int(port))).accept()
    connection.recv(1)
    time.sleep(0.1)  # as a collective takes a while to notice its peer gone
    print("algo-1: peer unavailable", file=sys.stderr)
    sys.exit(1)
for _ in range(500):
    try:
        peer = socket.create_connection((address, int(port)))
        break
    except ConnectionRefusedError:
        time.sleep(0.01)
time.sleep(0.3)
os._exit(7)
"""


def test_the_host_that_failed_first_is_the_cause_not_its_peer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both exits fall within one look of the job's (100 ms apart, looks 1 s apart), so host
    # order cannot decide; 100 ms is what a loaded machine's thread wake-ups cannot reorder.
    monkeypatch.setattr(job_module, "POLL_INTERVAL", 1.0)
    for attempt in range(3):
        result = run(
            tmp_path,
            script(tmp_path, _PEER_FAILS_FIRST),
            [],
            instance_count=2,
            distribution=Distribution(MWMS),
            job_name=f"job{attempt}",
        )
        assert result.exit_code == 7, result.failure
        assert (result.failure or "").startswith("AlgorithmError: train.py on algo-2 exited")


def test_cli_runs_hosts_with_a_distribution(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = script(tmp_path, "record('env.json', json.loads(os.environ['TF_CONFIG']))\n")
    out = tmp_path / "out"
    code = main(
        ["train", "--instance-count", "2", "--distribution", MWMS, "--output-path", str(out),
         "--job-name", "d", str(entry)]
    )  # fmt: skip
    assert code == 0
    assert recorded(out / "d", "env.json", "algo-2")["task"]["index"] == 1
    assert f"{MWMS}: workers algo-1 at {LOOPBACK}:" in capsys.readouterr().err


def test_cli_refuses_a_distribution_it_does_not_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = script(tmp_path, "pass\n")
    assert main(["train", "--distribution", "mpi", str(entry)]) == 2
    assert "'mpi' is not supported by the local runner" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--channel", "--input-data-config"])
def test_a_channel_written_after_the_script_is_an_error_when_the_job_has_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    data = folder_of_files(tmp_path / "data", {"a": b"x"})
    config = tmp_path / "channels.json"
    config.write_text(json.dumps({"train": {"S3Uri": str(data)}}))
    value = {"--channel": f"train={data}", "--input-data-config": str(config)}[option]
    entry = script(tmp_path, "record('ran.json', True)\n")
    out = tmp_path / "out"
    args = ["train", "--output-path", str(out), "--job-name", "j", str(entry)]
    assert main([*args, option, value]) == 2
    err = capsys.readouterr().err
    assert f"the job has no channels: {option} after the entry point" in err
    assert "write runner options before ENTRY_POINT" in err
    assert not (out / "j").exists()


def test_a_runner_option_after_the_script_is_passed_on_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = folder_of_files(tmp_path / "data", {"a": b"x"})
    entry = script(tmp_path, "record('argv.json', sys.argv[1:])\n")
    out = tmp_path / "out"
    code = main(
        ["train", "--channel", f"train={data}", "--output-path", str(out), "--job-name", "j",
         str(entry), "--instance-count=2", "--epochs", "3"]
    )  # fmt: skip
    assert code == 0
    assert recorded(out / "j", "argv.json") == ["--instance-count=2", "--epochs", "3"]
    err = capsys.readouterr().err
    assert "warning: --instance-count=2 after the entry point" in err
    assert "--epochs" not in err.split("warning:")[1].split("\n")[0]


def test_the_estimator_takes_the_sdks_distribution_dict(tmp_path: Path) -> None:
    entry = script(
        tmp_path,
        "record('seen.json', [os.environ['RANK'], os.environ['WORLD_SIZE'], sys.argv[1:]])\n",
    )
    estimator = Estimator(
        entry,
        hyperparameters={"epochs": 2},
        output_path=tmp_path / "out",
        instance_count=2,
        distribution={"torch_distributed": {"enabled": True}},
    )
    result = estimator.fit(job_name="est")
    assert recorded(result.job_dir, "seen.json", "algo-2") == ["1", "2", ["--epochs", "2"]]
    framework = json.loads(
        (result.job_dir / "algo-1" / "input" / "config" / "hyperparameters.json").read_text()
    )
    assert framework["sagemaker_torch_distributed_enabled"] == "true"
